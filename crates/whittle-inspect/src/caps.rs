//! Decoding `security.capability` (struct vfs_cap_data, linux/capability.h) into `getcap`
//! notation. No crate decodes the on-disk xattr format, and it is three little-endian words.

const NAMES: &[&str] = &[
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;

fn word(v: &[u8], i: usize) -> Option<u32> {
    v.get(i * 4..i * 4 + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `cap_net_bind_service,cap_net_raw=ep` style; `invalid` for a malformed value.
pub(crate) fn describe(v: &[u8]) -> String {
    let Some(magic) = word(v, 0) else {
        return "invalid".into();
    };
    let revision = magic & 0xFF00_0000;
    let (permitted, inheritable) = match revision {
        0x0100_0000 => (word(v, 1).map(u64::from), word(v, 2).map(u64::from)),
        0x0200_0000 | 0x0300_0000 => (
            word(v, 1)
                .zip(word(v, 3))
                .map(|(lo, hi)| u64::from(lo) | (u64::from(hi) << 32)),
            word(v, 2)
                .zip(word(v, 4))
                .map(|(lo, hi)| u64::from(lo) | (u64::from(hi) << 32)),
        ),
        _ => (None, None),
    };
    let (Some(permitted), Some(inheritable)) = (permitted, inheritable) else {
        return "invalid".into();
    };
    let names = |mask: u64| -> Vec<String> {
        (0..64)
            .filter(|b| mask & (1u64 << b) != 0)
            .map(|b| {
                NAMES
                    .get(b)
                    .map_or_else(|| format!("cap_{b}"), |s| s.to_string())
            })
            .collect()
    };
    let effective = magic & VFS_CAP_FLAGS_EFFECTIVE != 0;
    let mut parts = Vec::new();
    let all = permitted | inheritable;
    let mut flags = String::new();
    if effective {
        flags.push('e');
    }
    if inheritable == all && permitted == all {
        flags.push_str("ip");
        parts.push(format!("{}={flags}", names(all).join(",")));
    } else {
        if permitted != 0 {
            parts.push(format!(
                "{}={}p",
                names(permitted).join(","),
                if effective { "e" } else { "" }
            ));
        }
        if inheritable != 0 {
            parts.push(format!("{}=i", names(inheritable).join(",")));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v2_net_bind() {
        // setcap cap_net_bind_service=ep: revision 2, effective, permitted bit 10.
        let mut v = Vec::new();
        for w in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(describe(&v), "cap_net_bind_service=ep");
        assert_eq!(describe(&v[..3]), "invalid");
    }
}
