//! The collector on recorded kernel file trees: cgroup v2 in the exact formats of the kernel's
//! Documentation/admin-guide/cgroup-v2.rst (and accounting/psi.rst), cgroup v1 as a hybrid
//! Debian 12 host shows it. The same code path reads the live kernel in the CLI's tests.

use std::collections::BTreeMap;
use std::path::Path;

use whittle_engine::procfs::ProcRoot;
use whittle_engine::{Container, NetworkMode};
use whittle_metrics::openmetrics::{render, Format};
use whittle_metrics::sample::NetnsMode;
use whittle_metrics::Collector;

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn netns_link(root: &Path, pid: u32, ns: u64) {
    let dir = root.join(format!("proc/{pid}/ns"));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(format!("net:[{ns}]"), dir.join("net")).unwrap();
}

fn container(id: &str, name: &str, pid: u32, root: &ProcRoot, mode: NetworkMode) -> Container {
    Container {
        id: id.into(),
        name: name.into(),
        image: "img:1".into(),
        image_id: "sha256:0".into(),
        labels: BTreeMap::new(),
        state: "running".into(),
        health: Some("healthy".into()),
        pid: Some(pid),
        started_at: String::new(),
        network_mode: mode,
        networks: BTreeMap::new(),
        published: BTreeMap::new(),
        swarm_service: Some("shop_web".into()),
        swarm_task: Some("shop_web.1.abc".into()),
        oom_killed: false,
        cgroups: Some(root.cgroups(pid).unwrap()),
        netns: root.netns(pid).ok(),
    }
}

const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0: 5000000    4000    1    2    0     0          0         0   700000     900    3    4    0     0       0          0
";

#[test]
fn cgroup_v2_files_as_the_kernel_documents_them() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    put(r, "/proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n");
    netns_link(r, 4242, 4026532300);
    let cg = "/system.slice/docker-abc.scope";
    put(r, "/proc/4242/cgroup", &format!("0::{cg}\n"));
    put(r, "/proc/4242/net/dev", NET_DEV);
    let dir = format!("/sys/fs/cgroup{cg}");
    // cgroup-v2.rst "cpu.stat": usage_usec user_usec system_usec, and with the CPU controller
    // nr_periods nr_throttled throttled_usec nr_bursts burst_usec.
    put(r, &format!("{dir}/cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 100\nnr_throttled 25\nthrottled_usec 750000\nnr_bursts 0\nburst_usec 0\n");
    put(r, &format!("{dir}/cpu.max"), "50000 100000\n");
    put(r, &format!("{dir}/memory.current"), "209715200\n");
    put(r, &format!("{dir}/memory.max"), "268435456\n");
    put(r, &format!("{dir}/memory.stat"), "anon 157286400\nfile 52428800\nkernel 1048576\nkernel_stack 65536\nshmem 0\nactive_anon 157286400\ninactive_anon 0\nactive_file 10485760\ninactive_file 41943040\nunevictable 0\n");
    put(
        r,
        &format!("{dir}/memory.events"),
        "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    put(r, &format!("{dir}/io.stat"), "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021\n");
    put(r, &format!("{dir}/pids.current"), "7\n");
    put(r, &format!("{dir}/pids.max"), "max\n");
    put(r, &format!("{dir}/cgroup.procs"), "4242\n4300\n");
    put(r, &format!("{dir}/cpu.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=654\n");
    put(r, &format!("{dir}/memory.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
    put(r, &format!("{dir}/io.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=41\n");
    put(
        r,
        "/sys/dev/block/8:0/uevent",
        "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n",
    );
    // No /sys/dev/block/8:16: the device is named by its numbers.

    let proc = ProcRoot::at(r);
    let c = container("abc", "web", 4242, &proc, NetworkMode::Private);
    let col = Collector::new(proc).unwrap();
    let snap = col.collect_at(&[&c], 1_000_000_000);
    let s = &snap.containers[0];
    assert_eq!(s.cgroup_version, 2);
    assert_eq!(s.cpu.usage_ns, Some(2_500_000_000));
    assert_eq!(s.cpu.user_ns, Some(2_000_000_000));
    assert_eq!(s.cpu.throttled_periods, Some(25));
    assert_eq!(s.cpu.throttled_ns, Some(750_000_000));
    assert_eq!(s.cpu_limit_cores(), Some(0.5));
    assert_eq!(s.memory.usage, Some(209715200));
    assert_eq!(s.memory.working_set, Some(209715200 - 41943040));
    assert_eq!(s.memory.rss, Some(157286400));
    assert_eq!(s.memory.cache, Some(52428800));
    assert_eq!(s.memory.limit, Some(268435456));
    assert_eq!(s.memory.failcnt, Some(12));
    assert_eq!(s.memory.oom_kills, Some(1));
    assert_eq!(s.pids.current, Some(7));
    assert_eq!(s.pids.limit, None, "max is unlimited, not zero");
    assert_eq!(s.process_count, Some(2));
    assert_eq!(s.blkio.len(), 2);
    assert_eq!(s.blkio[0].device, "/dev/sda");
    assert_eq!(s.blkio[1].device, "8:16");
    let psi = s.psi.as_ref().expect("PSI present on v2");
    assert_eq!(
        (psi.cpu_some_us, psi.cpu_full_us, psi.io_full_us),
        (Some(123456), Some(654), Some(41))
    );
    assert_eq!(s.net.interfaces.len(), 1);
    assert_eq!(s.net.interfaces[0].rx_bytes, 5000000);

    let text = render(&snap, Format::OpenMetrics);
    for want in [
        "container_cpu_usage_seconds_total{id=\"/system.slice/docker-abc.scope\",name=\"web\",image=\"img:1\",container_label_com_docker_swarm_service_name=\"shop_web\",container_label_com_docker_swarm_task_name=\"shop_web.1.abc\",cpu=\"total\"} 2.500000000",
        "container_memory_working_set_bytes{id=\"/system.slice/docker-abc.scope\",name=\"web\",image=\"img:1\",container_label_com_docker_swarm_service_name=\"shop_web\",container_label_com_docker_swarm_task_name=\"shop_web.1.abc\"} 167772160",
        "container_fs_writes_bytes_total{id=\"/system.slice/docker-abc.scope\",name=\"web\",image=\"img:1\",container_label_com_docker_swarm_service_name=\"shop_web\",container_label_com_docker_swarm_task_name=\"shop_web.1.abc\",device=\"/dev/sda\"} 299008000",
        "whittle_container_pressure_cpu_some_seconds_total{",
        "} 0.123456\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("container_threads_max"),
        "unlimited pids.max must be absent"
    );
}

#[test]
fn cgroup_v1_hybrid_host_and_shared_netns() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    put(r, "/proc/self/mountinfo", "\
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 33 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
37 33 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
38 33 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
39 33 0:34 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,blkio
");
    netns_link(r, 10, 4026532400);
    netns_link(r, 20, 4026532400);
    std::fs::create_dir_all(r.join("proc/self/ns")).unwrap();
    std::os::unix::fs::symlink("net:[4026531840]", r.join("proc/self/ns/net")).unwrap();
    for (pid, id) in [(10, "aaa"), (20, "bbb")] {
        put(r, &format!("/proc/{pid}/cgroup"), &format!("12:pids:/docker/{id}\n11:blkio:/docker/{id}\n4:memory:/docker/{id}\n2:cpu,cpuacct:/docker/{id}\n0::/docker/{id}\n"));
        put(r, &format!("/proc/{pid}/net/dev"), NET_DEV);
        let cpu = format!("/sys/fs/cgroup/cpu,cpuacct/docker/{id}");
        put(r, &format!("{cpu}/cpuacct.usage"), "1500000000\n");
        put(r, &format!("{cpu}/cpuacct.stat"), "user 120\nsystem 30\n");
        put(
            r,
            &format!("{cpu}/cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 250000000\n",
        );
        put(r, &format!("{cpu}/cpu.cfs_quota_us"), "-1\n");
        put(r, &format!("{cpu}/cpu.cfs_period_us"), "100000\n");
        let mem = format!("/sys/fs/cgroup/memory/docker/{id}");
        put(r, &format!("{mem}/memory.usage_in_bytes"), "10485760\n");
        put(
            r,
            &format!("{mem}/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        put(r, &format!("{mem}/memory.failcnt"), "0\n");
        put(
            r,
            &format!("{mem}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        put(r, &format!("{mem}/memory.stat"), "cache 4194304\nrss 5242880\ninactive_file 1048576\ntotal_cache 4194304\ntotal_rss 5242880\ntotal_inactive_file 2097152\n");
        put(
            r,
            &format!("/sys/fs/cgroup/blkio/docker/{id}/blkio.throttle.io_service_bytes"),
            "Total 0\n",
        );
        put(
            r,
            &format!("/sys/fs/cgroup/pids/docker/{id}/pids.current"),
            "1\n",
        );
        put(
            r,
            &format!("/sys/fs/cgroup/pids/docker/{id}/pids.max"),
            "max\n",
        );
        put(
            r,
            &format!("/sys/fs/cgroup/pids/docker/{id}/cgroup.procs"),
            &format!("{pid}\n"),
        );
        put(r, &format!("/sys/fs/cgroup/unified/docker/{id}/cpu.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=77\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n");
    }
    let proc = ProcRoot::at(r);
    let a = container("aaa", "a", 10, &proc, NetworkMode::Private);
    let b = container("bbb", "b", 20, &proc, NetworkMode::Container("aaa".into()));
    let col = Collector::new(proc).unwrap();
    let snap = col.collect_at(&[&b, &a], 5);
    let (sa, sb) = (&snap.containers[0], &snap.containers[1]);
    assert_eq!(
        (sa.name.as_str(), sb.name.as_str()),
        ("a", "b"),
        "sorted by name"
    );
    assert_eq!(sa.cgroup_version, 1);
    assert_eq!(sa.cpu.usage_ns, Some(1_500_000_000));
    assert_eq!(sa.cpu.quota_us, None, "-1 is no quota");
    assert_eq!(
        sa.memory.limit, None,
        "the v1 'unlimited' value is no limit"
    );
    assert_eq!(
        sa.memory.working_set,
        Some(10485760 - 2097152),
        "total_inactive_file (hierarchical)"
    );
    assert_eq!(sa.memory.oom_kills, Some(3));
    assert!(sa.blkio.is_empty(), "no device lines: absent, not zero");
    assert_eq!(
        sa.psi.as_ref().and_then(|p| p.cpu_some_us),
        Some(77),
        "PSI from the unified hierarchy"
    );
    assert_eq!(sa.net.mode, NetnsMode::Shared);
    assert_eq!(sb.net.counted_in.as_deref(), Some("a"));
    assert_eq!(sa.net.interfaces.len(), 1);
    assert!(sb.net.interfaces.is_empty(), "counted once, in a");
}
