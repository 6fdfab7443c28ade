//! Which system calls name files, and how to read the names out of their arguments.
//!
//! Only these stop the tracee (the seccomp filter returns `SECCOMP_RET_TRACE` for them and
//! lets everything else run untraced). `getdents` itself is not traced: a directory must be
//! opened before it is listed, and the open is.

use crate::report::Kind;

/// One path argument of a call.
#[derive(Debug, Clone, Copy)]
pub struct PathArg {
    /// Argument index of the directory fd the path is relative to (`*at` calls).
    pub dirfd: Option<u8>,
    /// Argument index of the path pointer.
    pub path: u8,
    pub kind: Kind,
}

/// Calls whose kind depends on more than the syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    /// `open`-style flags in this argument.
    OpenFlags(u8),
    /// `openat2`: flags are the first field of the `open_how` at this argument.
    OpenHow(u8),
    /// `AT_EMPTY_PATH` in this flags argument means "the fd itself": nothing to record.
    EmptyPathFlags(u8),
}

#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    pub nr: i64,
    pub name: &'static str,
    pub args: &'static [PathArg],
    pub special: Special,
}

const fn p(path: u8, kind: Kind) -> PathArg {
    PathArg {
        dirfd: None,
        path,
        kind,
    }
}

const fn at(dirfd: u8, path: u8, kind: Kind) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
        kind,
    }
}

macro_rules! sc {
    ($nr:ident, [$($a:expr),*], $special:expr) => {
        Syscall {
            nr: libc::$nr as i64,
            name: stringify!($nr),
            args: {
                const A: &[PathArg] = &[$($a),*];
                A
            },
            special: $special,
        }
    };
}

use Kind::*;
use Special::None as N;

/// The traced calls (the architecture's numbers, from libc).
pub fn table() -> Vec<Syscall> {
    let mut v = vec![
        sc!(SYS_openat, [at(0, 1, Read)], Special::OpenFlags(2)),
        sc!(SYS_openat2, [at(0, 1, Read)], Special::OpenHow(2)),
        sc!(SYS_newfstatat, [at(0, 1, Stat)], Special::EmptyPathFlags(3)),
        sc!(SYS_statx, [at(0, 1, Stat)], Special::EmptyPathFlags(2)),
        sc!(SYS_faccessat, [at(0, 1, Stat)], N),
        sc!(SYS_faccessat2, [at(0, 1, Stat)], N),
        sc!(SYS_readlinkat, [at(0, 1, Readlink)], N),
        sc!(SYS_execve, [p(0, Exec)], N),
        sc!(SYS_execveat, [at(0, 1, Exec)], Special::EmptyPathFlags(4)),
        sc!(SYS_mkdirat, [at(0, 1, Create)], N),
        sc!(SYS_unlinkat, [at(0, 1, Delete)], N),
        sc!(SYS_renameat, [at(0, 1, Delete), at(2, 3, Create)], N),
        sc!(SYS_renameat2, [at(0, 1, Delete), at(2, 3, Create)], N),
        sc!(SYS_chdir, [p(0, Stat)], N),
        sc!(SYS_chroot, [p(0, Stat)], N),
        sc!(SYS_truncate, [p(0, Write)], N),
        sc!(SYS_symlinkat, [at(1, 2, Create)], N),
        sc!(SYS_linkat, [at(0, 1, Stat), at(2, 3, Create)], N),
        sc!(SYS_mknodat, [at(0, 1, Create)], N),
        sc!(SYS_fchmodat, [at(0, 1, Write)], N),
        sc!(SYS_fchownat, [at(0, 1, Write)], Special::EmptyPathFlags(4)),
        sc!(SYS_utimensat, [at(0, 1, Write)], N),
        sc!(SYS_statfs, [p(0, Stat)], N),
        sc!(SYS_getxattr, [p(0, Stat)], N),
        sc!(SYS_lgetxattr, [p(0, Stat)], N),
        sc!(SYS_listxattr, [p(0, Stat)], N),
        sc!(SYS_llistxattr, [p(0, Stat)], N),
        sc!(SYS_setxattr, [p(0, Write)], N),
        sc!(SYS_lsetxattr, [p(0, Write)], N),
        sc!(SYS_removexattr, [p(0, Write)], N),
        sc!(SYS_lremovexattr, [p(0, Write)], N),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        sc!(SYS_open, [p(0, Read)], Special::OpenFlags(1)),
        sc!(SYS_creat, [p(0, Create)], N),
        sc!(SYS_stat, [p(0, Stat)], N),
        sc!(SYS_lstat, [p(0, Stat)], N),
        sc!(SYS_access, [p(0, Stat)], N),
        sc!(SYS_readlink, [p(0, Readlink)], N),
        sc!(SYS_mkdir, [p(0, Create)], N),
        sc!(SYS_rmdir, [p(0, Delete)], N),
        sc!(SYS_unlink, [p(0, Delete)], N),
        sc!(SYS_rename, [p(0, Delete), p(1, Create)], N),
        sc!(SYS_symlink, [p(1, Create)], N),
        sc!(SYS_link, [p(0, Stat), p(1, Create)], N),
        sc!(SYS_mknod, [p(0, Create)], N),
        sc!(SYS_chmod, [p(0, Write)], N),
        sc!(SYS_chown, [p(0, Write)], N),
        sc!(SYS_lchown, [p(0, Write)], N),
        sc!(SYS_utime, [p(0, Write)], N),
        sc!(SYS_utimes, [p(0, Write)], N),
        sc!(SYS_futimesat, [at(0, 1, Write)], N),
    ]);
    v
}

/// The kinds an `open` with these flags stands for.
pub fn open_kinds(flags: i64) -> Vec<Kind> {
    let flags = flags as libc::c_int;
    if flags & libc::O_PATH != 0 {
        return vec![Stat];
    }
    if flags & libc::O_DIRECTORY != 0 {
        return vec![List];
    }
    let mut k = Vec::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => k.push(Write),
        libc::O_RDWR => {
            k.push(Read);
            k.push(Write)
        }
        _ => k.push(Read),
    }
    if flags & libc::O_TRUNC != 0 && !k.contains(&Write) {
        k.push(Write);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_unique_numbers_and_fits_a_filter() {
        let t = table();
        let mut nrs: Vec<i64> = t.iter().map(|s| s.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), t.len());
        assert!(t.len() < 200);
    }

    #[test]
    fn open_flags() {
        assert_eq!(open_kinds(libc::O_RDONLY as i64), vec![Read]);
        assert_eq!(
            open_kinds((libc::O_WRONLY | libc::O_CREAT) as i64),
            vec![Write]
        );
        assert_eq!(
            open_kinds((libc::O_RDONLY | libc::O_DIRECTORY) as i64),
            vec![List]
        );
        assert_eq!(open_kinds((libc::O_PATH) as i64), vec![Stat]);
        assert_eq!(open_kinds(libc::O_RDWR as i64), vec![Read, Write]);
    }
}
