//! Capabilities: the set Docker gives a container by default, and nothing more.

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: [(u32, &str); 14] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// Every capability Linux 6.x defines (`linux/capability.h`), by number.
pub const ALL: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit mask of capability names (`CAP_CHOWN`, …); None for an unknown name.
pub fn mask_of<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    names.into_iter().try_fold(0u64, |m, n| {
        ALL.iter().position(|c| *c == n).map(|i| m | (1u64 << i))
    })
}

/// The names of the capabilities in `mask`, in number order.
pub fn names_of(mask: u64) -> Vec<&'static str> {
    (0..ALL.len())
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| ALL[i])
        .collect()
}

/// The default set as a bit mask.
pub fn default_mask() -> u64 {
    DOCKER_DEFAULT.iter().fold(0, |m, (c, _)| m | (1u64 << c))
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in `keep` from the bounding set (needs `CAP_SETPCAP`, so before
/// changing uid).
pub fn drop_bounding(keep: u64, last: u32) -> Result<(), i32> {
    for cap in 0..=last {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            // EINVAL: a capability this kernel does not have.
            if e != libc::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets effective, permitted and inheritable sets to `mask` (can only shrink them).
pub fn set_caps(mask: u64) -> Result<(), i32> {
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: header and a two-element data array of the v3 layout, as capset(2) requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_mask_is_dockers() {
        assert_eq!(super::default_mask(), 0xa80425fb);
        let names: Vec<&str> = super::DOCKER_DEFAULT.iter().map(|c| c.1).collect();
        assert_eq!(super::mask_of(names.iter().copied()), Some(0xa80425fb));
        assert_eq!(super::names_of(0xa80425fb), names);
        assert_eq!(super::mask_of(["CAP_NOPE"]), None);
    }
}
