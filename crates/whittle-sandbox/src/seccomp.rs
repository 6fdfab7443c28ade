//! The seccomp filter that makes only file-related system calls stop the tracee.
//!
//! Built by hand: the program is an architecture check and one comparison per traced call
//! (about 60 instructions). A crate like `seccompiler` would bring a rule language and JSON
//! front end for what is a loop over [`crate::syscalls::table`].

/// Architecture check value for the running architecture (`AUDIT_ARCH_*`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The filter program: `SECCOMP_RET_TRACE` for `nrs`, `SECCOMP_RET_ALLOW` for the rest
/// (including other architectures' calls, which the table does not describe).
pub fn program(nrs: &[i64]) -> Vec<libc::sock_filter> {
    assert!(nrs.len() < 250, "jump offsets are 8 bits");
    let mut p = vec![
        // seccomp_data.arch
        stmt(BPF_LD_W_ABS, 4),
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        },
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        // seccomp_data.nr
        stmt(BPF_LD_W_ABS, 0),
    ];
    let n = nrs.len();
    for (i, nr) in nrs.iter().enumerate() {
        p.push(libc::sock_filter {
            code: BPF_JEQ_K,
            jt: (n - i) as u8,
            jf: 0,
            k: *nr as u32,
        });
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_TRACE));
    p
}

/// The filter program of a syscall-recording run: `SECCOMP_RET_TRACE` for every call of the
/// native architecture.
pub fn program_all() -> Vec<libc::sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, 4),
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        },
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        stmt(BPF_RET_K, SECCOMP_RET_TRACE),
    ]
}

/// Installs `prog` on the calling thread (needs no_new_privs or `CAP_SYS_ADMIN`).
pub fn install(prog: &[libc::sock_filter]) -> Result<(), i32> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on (arch, nr) like the kernel would.
    fn run(p: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == 4 { arch } else { nr },
                BPF_JEQ_K => {
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                BPF_RET_K => return i.k,
                _ => panic!("unexpected instruction"),
            }
            pc += 1;
        }
    }

    #[test]
    fn traces_only_listed_calls() {
        let p = program(&[2, 257, 59]);
        assert_eq!(run(&p, AUDIT_ARCH, 257), SECCOMP_RET_TRACE);
        assert_eq!(run(&p, AUDIT_ARCH, 2), SECCOMP_RET_TRACE);
        assert_eq!(run(&p, AUDIT_ARCH, 59), SECCOMP_RET_TRACE);
        assert_eq!(run(&p, AUDIT_ARCH, 0), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, 0x4000_0003, 257), SECCOMP_RET_ALLOW);
        let all = program_all();
        assert_eq!(run(&all, AUDIT_ARCH, 0), SECCOMP_RET_TRACE);
        assert_eq!(run(&all, AUDIT_ARCH, 435), SECCOMP_RET_TRACE);
        assert_eq!(run(&all, 0x4000_0003, 0), SECCOMP_RET_ALLOW);
    }
}
