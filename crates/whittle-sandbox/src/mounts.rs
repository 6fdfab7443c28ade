//! The sandbox's file system view, built by its init inside the new mount namespace.
//!
//! Everything is mounted in the sandbox's own (private) mount namespace, so nothing needs
//! unmounting afterwards: the namespace and its mounts vanish with its last process. Paths of
//! the image are only resolved *after* `pivot_root`, so a symlink the image places at `/proc`,
//! `/dev` or `/etc/hosts` resolves inside the sandbox, never to a host path. Host files that
//! are mounted in (device nodes, the generated `/etc/hosts`, …) are opened before the pivot and
//! bound through `/proc/self/fd/N`.

use std::ffi::CString;

use whittle_kernel::Kernel as Sys;

/// Where the root comes from.
#[derive(Debug, Clone)]
pub enum RootSource {
    /// An overlay: read-only extracted lower, private upper and work directories.
    Overlay {
        lower: CString,
        upper: CString,
        work: CString,
    },
    /// A private copy, bind-mounted (when overlayfs is not available).
    Copy(CString),
}

#[derive(Debug, Clone)]
pub struct RootPlan {
    pub source: RootSource,
    /// Empty host directory the root is mounted on.
    pub mountpoint: CString,
    pub hostname: Vec<u8>,
    /// (target inside the sandbox, host file) to bind-mount: /etc/hosts and friends.
    pub etc_files: Vec<(CString, CString)>,
}

/// Device nodes bound from the host into the sandbox's tmpfs `/dev` (Docker's minimal set).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// A failed step: which one and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepError {
    pub step: &'static str,
    pub errno: i32,
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in fixed paths")
}

fn step(step: &'static str, r: Result<(), i32>) -> Result<(), StepError> {
    r.map_err(|errno| StepError { step, errno })
}

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// Builds the root and pivots into it. Host files bound in are cloned as detached mounts
/// (`open_tree`) before the pivot and attached (`move_mount`) after it.
pub fn setup_root<S: Sys>(sys: &S, plan: &RootPlan) -> Result<(), StepError> {
    step(
        "make / private",
        sys.mount(None, &c("/"), None, libc::MS_REC | libc::MS_PRIVATE, None),
    )?;
    match &plan.source {
        RootSource::Overlay { lower, upper, work } => {
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.to_string_lossy(),
                upper.to_string_lossy(),
                work.to_string_lossy()
            );
            step(
                "mount overlay root",
                sys.mount(
                    Some(&c("overlay")),
                    &plan.mountpoint,
                    Some(&c("overlay")),
                    0,
                    Some(&c(&data)),
                ),
            )?;
        }
        RootSource::Copy(dir) => step(
            "bind-mount root copy",
            sys.mount(
                Some(dir),
                &plan.mountpoint,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
        )?,
    }
    // Host files to bind in, opened while the host is still visible.
    let mut devs = Vec::new();
    for d in DEVICES {
        let fd = sys
            .open_tree(&c(&format!("/dev/{d}")))
            .map_err(|errno| StepError {
                step: "open host device",
                errno,
            })?;
        devs.push((d, fd));
    }
    let mut etc = Vec::new();
    for (target, src) in &plan.etc_files {
        let fd = sys.open_tree(src).map_err(|errno| StepError {
            step: "open generated /etc file",
            errno,
        })?;
        etc.push((target, fd));
    }

    // runc's trick: pivot_root(".", ".") stacks the old root on the new one, and a lazy
    // unmount of "." then removes it, with no directory needed in the image.
    step("chdir to new root", sys.chdir(&plan.mountpoint))?;
    step("pivot_root", sys.pivot_root(&c("."), &c(".")))?;
    step("detach old root", sys.umount2(&c("."), libc::MNT_DETACH))?;
    step("chdir /", sys.chdir(&c("/")))?;

    step("mkdir /proc", sys.mkdir(&c("/proc"), 0o555))?;
    step(
        "mount /proc",
        sys.mount(
            Some(&c("proc")),
            &c("/proc"),
            Some(&c("proc")),
            NOSUID | NODEV | NOEXEC,
            None,
        ),
    )?;
    step("mkdir /sys", sys.mkdir(&c("/sys"), 0o555))?;
    step(
        "mount /sys read-only",
        sys.mount(
            Some(&c("sysfs")),
            &c("/sys"),
            Some(&c("sysfs")),
            libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
            None,
        ),
    )?;
    step("mkdir /dev", sys.mkdir(&c("/dev"), 0o755))?;
    step(
        "mount /dev",
        sys.mount(
            Some(&c("tmpfs")),
            &c("/dev"),
            Some(&c("tmpfs")),
            NOSUID | libc::MS_STRICTATIME,
            Some(&c("mode=755,size=65536k")),
        ),
    )?;
    for (d, fd) in devs {
        let target = c(&format!("/dev/{d}"));
        step("create device mount point", sys.touch(&target))?;
        step("bind device", sys.move_mount(fd, &target))?;
    }
    step("mkdir /dev/pts", sys.mkdir(&c("/dev/pts"), 0o755))?;
    step(
        "mount /dev/pts",
        sys.mount(
            Some(&c("devpts")),
            &c("/dev/pts"),
            Some(&c("devpts")),
            NOSUID | NOEXEC,
            Some(&c("newinstance,ptmxmode=0666,mode=0620,gid=5")),
        ),
    )?;
    step("mkdir /dev/shm", sys.mkdir(&c("/dev/shm"), 0o1777))?;
    step(
        "mount /dev/shm",
        sys.mount(
            Some(&c("shm")),
            &c("/dev/shm"),
            Some(&c("tmpfs")),
            NOSUID | NODEV | NOEXEC,
            Some(&c("mode=1777,size=65536k")),
        ),
    )?;
    step("mkdir /dev/mqueue", sys.mkdir(&c("/dev/mqueue"), 0o755))?;
    step(
        "mount /dev/mqueue",
        sys.mount(
            Some(&c("mqueue")),
            &c("/dev/mqueue"),
            Some(&c("mqueue")),
            NOSUID | NODEV | NOEXEC,
            None,
        ),
    )?;
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("/proc/kcore", "/dev/core"),
    ] {
        step("/dev symlink", sys.symlink(&c(target), &c(link)))?;
    }
    if !etc.is_empty() {
        step("mkdir /etc", sys.mkdir(&c("/etc"), 0o755))?;
    }
    for (target, fd) in etc {
        step("create /etc mount point", sys.touch(target))?;
        step("bind /etc file", sys.move_mount(fd, target))?;
    }
    step("sethostname", sys.sethostname(&plan.hostname))?;
    step("bring loopback up", sys.loopback_up())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_kernel::Recording;

    fn plan() -> RootPlan {
        RootPlan {
            source: RootSource::Overlay {
                lower: c("/t/lower"),
                upper: c("/t/upper"),
                work: c("/t/work"),
            },
            mountpoint: c("/t/root"),
            hostname: b"abc".to_vec(),
            etc_files: vec![(c("/etc/hosts"), c("/t/hosts"))],
        }
    }

    #[test]
    fn pivots_before_touching_image_paths() {
        let sys = Recording::default();
        setup_root(&sys, &plan()).unwrap();
        let calls = sys.calls.borrow();
        assert_eq!(calls[0], "mount - / - 0x44000 -");
        assert_eq!(
            calls[1],
            "mount overlay /t/root overlay 0x0 lowerdir=/t/lower,upperdir=/t/upper,workdir=/t/work"
        );
        let pivot = calls
            .iter()
            .position(|l| l.starts_with("pivot_root"))
            .unwrap();
        assert_eq!(calls[pivot], "pivot_root . .");
        assert_eq!(calls[pivot + 1], "umount2 . 2");
        // Every image path is touched after the pivot.
        for (i, l) in calls.iter().enumerate() {
            if l.starts_with("mkdir") || l.starts_with("touch") || l.starts_with("symlink") {
                assert!(i > pivot, "{l} before pivot_root");
            }
        }
        assert!(calls.iter().any(|l| l == "open_tree /dev/null -> 102"));
        assert!(calls.iter().any(|l| l == "move_mount 102 /dev/null"));
        let hosts = calls
            .iter()
            .position(|l| l.starts_with("open_tree /t/hosts"))
            .unwrap();
        assert!(hosts < pivot);
        assert!(calls
            .iter()
            .any(|l| l.starts_with("move_mount") && l.ends_with("/etc/hosts")));
        assert!(calls.iter().any(|l| l == "mount sysfs /sys sysfs 0xf -"));
        assert_eq!(calls[calls.len() - 2], "sethostname abc");
        assert_eq!(calls[calls.len() - 1], "loopback_up");
    }

    #[test]
    fn reports_the_failing_step() {
        let sys = Recording {
            fail_on: Some("pivot_root".into()),
            ..Recording::default()
        };
        let e = setup_root(&sys, &plan()).unwrap_err();
        assert_eq!(
            e,
            StepError {
                step: "pivot_root",
                errno: libc::EPERM
            }
        );
        assert!(sys.calls.borrow().last().unwrap().starts_with("pivot_root"));
    }
}
