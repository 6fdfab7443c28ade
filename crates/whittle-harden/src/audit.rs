//! `whittle audit`: the security facts of an image (and of its slim version beside it).

use serde::Serialize;
use whittle_fstree::{FlattenOptions, NodeKind};
use whittle_image::ImageRef;

use crate::Result;

/// Programs an attacker with a foothold wants: shells and package managers.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "busybox"];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt", "apt-get", "dpkg", "apk", "yum", "dnf", "rpm", "pip", "pip3", "npm", "gem",
];
const BIN_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];

#[derive(Debug, Clone, Serialize, Default)]
pub struct Facts {
    pub image: String,
    /// The config's User (empty: root).
    pub user: String,
    pub runs_as_root: bool,
    pub setuid: Vec<String>,
    pub setgid: Vec<String>,
    /// Files with a `security.capability` xattr.
    pub file_caps: Vec<String>,
    pub shells: Vec<String>,
    pub package_managers: Vec<String>,
    /// Files and directories writable by everyone (sticky directories like /tmp left out).
    pub world_writable: Vec<String>,
    /// TCP/UDP ports the app bound in a sandboxed run (None: not traced).
    pub listening: Option<Vec<u16>>,
}

/// Reads the image's files (no run) and, with `trace`, runs it once in the sandbox to see
/// what it binds.
pub fn audit(
    r: &ImageRef,
    trace: Option<&whittle_sandbox::Options>,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Facts> {
    let image = whittle_image::open(r).map_err(whittle_sandbox::Error::from)?;
    let view = image.config.view();
    let flat = whittle_fstree::flatten(&image, FlattenOptions::default(), progress)
        .map_err(whittle_sandbox::Error::from)?;
    let user = view.user.clone().unwrap_or_default();
    let mut f = Facts {
        image: r.to_string(),
        runs_as_root: matches!(user.split(':').next(), None | Some("" | "0" | "root")),
        user,
        ..Facts::default()
    };
    for (path, node) in flat.tree.iter() {
        let p = format!("/{}", String::from_utf8_lossy(path));
        let mode = node.meta.mode;
        match &node.kind {
            NodeKind::File { .. } => {
                if mode & 0o4000 != 0 {
                    f.setuid.push(p.clone());
                }
                if mode & 0o2000 != 0 {
                    f.setgid.push(p.clone());
                }
                if node
                    .meta
                    .xattrs
                    .iter()
                    .any(|(k, _)| k.as_slice() == b"security.capability")
                {
                    f.file_caps.push(p.clone());
                }
                if mode & 0o002 != 0 {
                    f.world_writable.push(p.clone());
                }
            }
            NodeKind::Dir { .. } if mode & 0o002 != 0 && mode & 0o1000 == 0 => {
                f.world_writable.push(p.clone());
            }
            _ => {}
        }
        let s = String::from_utf8_lossy(path);
        if let Some((dir, name)) = s.rsplit_once('/') {
            if BIN_DIRS.contains(&dir) && !matches!(node.kind, NodeKind::Dir { .. }) {
                if SHELLS.contains(&name) {
                    f.shells.push(p.clone());
                }
                if PACKAGE_MANAGERS.contains(&name) {
                    f.package_managers.push(p.clone());
                }
            }
        }
    }
    if let Some(o) = trace {
        let img = whittle_sandbox::PreparedImage::from_flattened(r.to_string(), view, flat)?;
        let mut o = o.clone();
        o.syscalls = whittle_sandbox::syscall_log::SyscallMode::Record;
        let rep = whittle_sandbox::run(&img, &o)?;
        let mut ports: Vec<u16> = rep
            .syscalls
            .iter()
            .flat_map(|l| l.ops.iter())
            .filter(|op| op.errno == 0 && op.what.starts_with("bind port "))
            .filter_map(|op| op.arg.map(|a| a as u16))
            .filter(|&p| p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        f.listening = Some(ports);
    }
    for v in [
        &mut f.setuid,
        &mut f.setgid,
        &mut f.file_caps,
        &mut f.shells,
        &mut f.package_managers,
        &mut f.world_writable,
    ] {
        v.sort();
    }
    Ok(f)
}

/// The facts of one or two images as a table: one row per fact, one column per image.
pub fn render(images: &[Facts]) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else if v.len() <= 3 {
            v.join(" ")
        } else {
            format!("{} ({} …)", v.len(), v[..2].join(" "))
        }
    };
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("image", images.iter().map(|f| f.image.clone()).collect()),
        (
            "user",
            images
                .iter()
                .map(|f| {
                    let u = if f.user.is_empty() { "(root)" } else { &f.user };
                    format!("{u}{}", if f.runs_as_root { " ROOT" } else { "" })
                })
                .collect(),
        ),
        ("setuid", images.iter().map(|f| list(&f.setuid)).collect()),
        ("setgid", images.iter().map(|f| list(&f.setgid)).collect()),
        (
            "file caps",
            images.iter().map(|f| list(&f.file_caps)).collect(),
        ),
        ("shells", images.iter().map(|f| list(&f.shells)).collect()),
        (
            "package managers",
            images.iter().map(|f| list(&f.package_managers)).collect(),
        ),
        (
            "world-writable",
            images.iter().map(|f| list(&f.world_writable)).collect(),
        ),
        (
            "listening",
            images
                .iter()
                .map(|f| match &f.listening {
                    None => "not traced".into(),
                    Some(p) if p.is_empty() => "none".into(),
                    Some(p) => p
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect(),
        ),
    ];
    let widths: Vec<usize> = (0..images.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (name, cols) in rows {
        s.push_str(&format!("{name:<17}"));
        for (i, c) in cols.iter().enumerate() {
            s.push_str(&format!("  {c:<w$}", w = widths[i]));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
    }
    s
}
