//! A pids cgroup around the sandbox: a fork bomb hits its limit instead of the machine's,
//! and the cgroup's process list is a last check that nothing is left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// Creates `whittle-NAME` with `pids.max = max` under the pids hierarchy (cgroup v1
    /// `/sys/fs/cgroup/pids`, or v2 when `pids` is an enabled controller). None when neither
    /// is usable.
    pub fn create(name: &str, max: u64) -> Option<PidsCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let base = if v1.join("cgroup.procs").exists() {
            v1.to_path_buf()
        } else {
            let root = Path::new("/sys/fs/cgroup");
            let ctl = std::fs::read_to_string(root.join("cgroup.subtree_control")).ok()?;
            if !ctl.split_whitespace().any(|c| c == "pids") {
                return None;
            }
            root.to_path_buf()
        };
        let dir = base.join(format!("whittle-{name}"));
        std::fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup { dir };
        std::fs::write(cg.dir.join("pids.max"), max.to_string()).ok()?;
        Some(cg)
    }

    pub fn add(&self, pid: i32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether the limit was hit (`pids.events` max count, v2 and recent v1).
    pub fn limit_hit(&self) -> bool {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("max ").map(|n| n.trim().parse::<u64>()))
            })
            .and_then(Result::ok)
            .is_some_and(|n| n > 0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for pid in self.pids() {
                // SAFETY: kill with integer arguments; the pid is in our cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
