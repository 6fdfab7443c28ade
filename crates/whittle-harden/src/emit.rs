//! The plan as files: `seccomp.json`, `run.sh`, `compose.yaml` — and as the engine's
//! `HostConfig` for the proof, from the same plan so that what was proven is what is written.

use std::collections::HashMap;

use bollard::models::HostConfig;
use serde_json::{json, Value};

use crate::plan::Plan;

/// `seccomp.json` in the format Docker 20.10 reads: `defaultAction` errno (EPERM, 20.10 ignores
/// `defaultErrnoRet`), the x86_64 architectures, one allow rule, and the ENOSYS rule.
pub fn seccomp_profile(plan: &Plan) -> Value {
    let mut rules = vec![json!({
        "names": plan.syscalls,
        "action": "SCMP_ACT_ALLOW",
    })];
    if !plan.enosys.is_empty() {
        rules.push(json!({
            "names": plan.enosys,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

/// The `docker run` flags of the plan (`seccomp` is the profile's path).
pub fn docker_flags(plan: &Plan, seccomp: &str) -> Vec<String> {
    let mut f: Vec<String> = vec!["--cap-drop".into(), "ALL".into()];
    for c in &plan.caps {
        f.push("--cap-add".into());
        f.push(c.trim_start_matches("CAP_").into());
    }
    f.push("--security-opt".into());
    f.push("no-new-privileges".into());
    f.push("--security-opt".into());
    f.push(format!("seccomp={seccomp}"));
    f.push("--user".into());
    f.push(format!("{}:{}", plan.uid, plan.gid));
    if plan.read_only {
        f.push("--read-only".into());
    }
    for (d, o) in &plan.tmpfs {
        f.push("--tmpfs".into());
        f.push(format!("{d}:{o}"));
    }
    for (k, v) in &plan.sysctls {
        f.push("--sysctl".into());
        f.push(format!("{k}={v}"));
    }
    if let Some(m) = plan.memory {
        f.push("--memory".into());
        f.push(format!("{}m", m >> 20));
    }
    if let Some(p) = plan.pids_limit {
        f.push("--pids-limit".into());
        f.push(p.to_string());
    }
    if plan.init {
        f.push("--init".into());
    }
    f
}

/// The same settings for the Engine API (the profile goes in as its JSON text, which is what
/// the docker CLI sends for `seccomp=FILE`).
pub fn host_config(plan: &Plan) -> HostConfig {
    let profile = seccomp_profile(plan).to_string();
    HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(plan.caps.iter().cloned().collect()),
        security_opt: Some(vec![
            "no-new-privileges".into(),
            format!("seccomp={profile}"),
        ]),
        readonly_rootfs: Some(plan.read_only),
        tmpfs: Some(plan.tmpfs.clone().into_iter().collect::<HashMap<_, _>>()),
        sysctls: Some(plan.sysctls.clone().into_iter().collect::<HashMap<_, _>>()),
        memory: plan.memory.map(|m| m as i64),
        pids_limit: plan.pids_limit,
        init: Some(plan.init),
        ..HostConfig::default()
    }
}

/// Single-quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `run.sh [DOCKER-RUN-ARGS…]`: `docker run -d`, the caller's arguments, the plan, the image;
/// docker prints the container id.
pub fn run_sh(plan: &Plan, image: &str) -> String {
    let flags = docker_flags(plan, "$here/seccomp.json");
    let mut s = String::from(
        "#!/bin/sh\n# Written by `whittle harden`: the least-privilege settings its proof ran the image with.\n\
         # Usage: ./run.sh [DOCKER-RUN-ARGS...]   e.g. ./run.sh --name web -p 8080:80\n\
         set -eu\nhere=$(cd \"$(dirname \"$0\")\" && pwd)\nexec docker run -d \"$@\"",
    );
    let quote = |f: &str| {
        if f.contains("$here") {
            format!("\"{f}\"")
        } else {
            sh_quote(f)
        }
    };
    let mut it = flags.iter().peekable();
    while let Some(f) = it.next() {
        s.push_str(" \\\n\t");
        s.push_str(&quote(f));
        // A flag and its value on one line.
        if let Some(v) = it.next_if(|v| !v.starts_with("--")) {
            s.push(' ');
            s.push_str(&quote(v));
        }
    }
    s.push_str(" \\\n\t");
    s.push_str(&sh_quote(image));
    s.push('\n');
    s
}

/// A compose service (file format 2.4, which Debian's docker-compose 1.29 reads and which
/// still has `mem_limit` and `pids_limit` outside Swarm).
pub fn compose_yaml(plan: &Plan, image: &str, seccomp_path: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut y = format!(
        "# Written by `whittle harden`.\nversion: \"2.4\"\nservices:\n  app:\n    image: {}\n    user: {}\n    read_only: {}\n    cap_drop: [ALL]\n",
        q(image),
        q(&format!("{}:{}", plan.uid, plan.gid)),
        plan.read_only
    );
    if !plan.caps.is_empty() {
        y.push_str("    cap_add:\n");
        for c in &plan.caps {
            y.push_str(&format!("      - {}\n", c.trim_start_matches("CAP_")));
        }
    }
    y.push_str(&format!(
        "    security_opt:\n      - no-new-privileges:true\n      - {}\n",
        q(&format!("seccomp:{seccomp_path}"))
    ));
    if !plan.tmpfs.is_empty() {
        y.push_str("    tmpfs:\n");
        for (d, o) in &plan.tmpfs {
            y.push_str(&format!("      - {}\n", q(&format!("{d}:{o}"))));
        }
    }
    if !plan.sysctls.is_empty() {
        y.push_str("    sysctls:\n");
        for (k, v) in &plan.sysctls {
            y.push_str(&format!("      {k}: {}\n", q(v)));
        }
    }
    if let Some(m) = plan.memory {
        y.push_str(&format!("    mem_limit: {}m\n", m >> 20));
    }
    if let Some(p) = plan.pids_limit {
        y.push_str(&format!("    pids_limit: {p}\n"));
    }
    if plan.init {
        y.push_str("    init: true\n");
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn plan() -> Plan {
        Plan {
            syscalls: ["read", "write", "exit_group"].map(String::from).into(),
            enosys: BTreeSet::from(["clone3".to_string()]),
            caps: BTreeSet::from(["CAP_CHOWN".to_string()]),
            uid: 33,
            gid: 33,
            user_changed: true,
            read_only: true,
            tmpfs: BTreeMap::from([("/run".into(), "rw,noexec,mode=0755".into())]),
            sysctls: BTreeMap::from([("net.ipv4.ip_unprivileged_port_start".into(), "80".into())]),
            memory: Some(64 << 20),
            pids_limit: Some(32),
            init: false,
        }
    }

    #[test]
    fn profile_has_only_fields_docker_20_10_reads() {
        let p = seccomp_profile(&plan());
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["defaultAction", "architectures", "syscalls"]);
        assert_eq!(p["syscalls"][1]["errnoRet"], 38);
        assert_eq!(p["syscalls"][0]["names"][0], "exit_group");
    }

    #[test]
    fn run_sh_passes_every_setting() {
        let s = run_sh(&plan(), "web:1");
        for want in [
            "exec docker run -d \"$@\"",
            "--cap-drop ALL \\",
            "CHOWN",
            "\"seccomp=$here/seccomp.json\"",
            "--read-only",
            "/run:rw,noexec,mode=0755",
            "net.ipv4.ip_unprivileged_port_start=80",
            "--memory 64m",
            "33:33",
            "\tweb:1\n",
        ] {
            assert!(s.contains(want), "{want} missing in\n{s}");
        }
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
    }
}
