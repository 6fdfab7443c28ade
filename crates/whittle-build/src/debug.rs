//! The debug variant: the slim image's layers unchanged, plus exactly one layer of tools.
//!
//! A debug image that is rebuilt on its own drifts from the image it is meant to debug; this
//! one cannot: its lower layers are the slim image's (same diff_ids, so an engine that has the
//! slim image stores only the tools layer) and its config names the slim config's digest in
//! `org.whittle.debug-of`. The tools come from a toolbox image (by default the fat source)
//! with their static closure, found as `--include-exe` finds a program; a file the closure
//! needs that the slim image has with other content would silently change the app under the
//! debugger, so it is refused.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use whittle_deps::image::config_of;
use whittle_fstree::{display_path, ContentStore, FsTree, Node, NodeKind};
use whittle_image::write::Destination;
use whittle_image::{ConfigView, ImageRef, Transport};

use crate::layers::Role;
use crate::report::LayerReport;
use crate::select::{Reason, Selection};
use crate::{write, BuildOptions, Error, LayerPlan, Traced, Written};

/// What `--debug-tools` gives when it is not set: those the toolbox has are taken, the
/// others named in a note.
pub const DEFAULT_TOOLS: &[&str] = &["sh", "ls", "cat", "ps", "top", "curl", "ip", "ss", "strace"];

/// The label naming the slim image's config digest.
pub const DEBUG_OF_LABEL: &str = "org.whittle.debug-of";

#[derive(Debug, Clone, Default)]
pub struct DebugOptions {
    /// `--debug-tools`; `None`: [`DEFAULT_TOOLS`], taking what exists.
    pub tools: Option<Vec<String>>,
    /// `--debug-from`; `None`: the fat source.
    pub from: Option<ImageRef>,
}

/// The image tools are taken from.
#[derive(Debug, Clone, Copy)]
pub struct Toolbox<'a> {
    pub name: &'a str,
    pub tree: &'a FsTree,
    pub store: &'a ContentStore,
    pub view: &'a ConfigView,
}

/// The tools layer, resolved.
#[derive(Debug)]
pub struct Tools {
    pub tree: FsTree,
    pub store: ContentStore,
    /// Tool name → its path in the toolbox.
    pub found: Vec<(String, String)>,
    /// Default tools the toolbox lacks.
    pub missing: Vec<String>,
    pub toolbox: String,
}

/// The debug variant as written, in the build report.
#[derive(Debug, Clone, Serialize)]
pub struct DebugReport {
    pub destination: String,
    pub tag: Option<String>,
    pub config_digest: String,
    /// The slim image's config digest (the `org.whittle.debug-of` label).
    pub debug_of: String,
    pub toolbox: String,
    pub tools: Vec<String>,
    pub missing_tools: Vec<String>,
    pub layer: LayerReport,
}

/// The destination of the debug variant: beside the slim one (`out/web.tar` →
/// `out/web-debug.tar`, `oci:dir` → `oci:dir-debug`), its name tagged `-debug`.
pub fn destination(dest: &ImageRef) -> ImageRef {
    let mut d = dest.clone();
    if dest.transport != Transport::DockerDaemon {
        d.path = sibling(&dest.path);
    }
    d.name = dest.name.as_deref().map(|n| debug_tag(n, dest.transport));
    d
}

fn sibling(p: &std::path::Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-debug.{ext}"),
        _ => format!("{name}-debug"),
    };
    p.with_file_name(new)
}

/// `shop/web:1.4` → `shop/web:1.4-debug` (`NAME` → `NAME:latest-debug`); an OCI layout's tag
/// `v1` → `v1-debug`.
pub fn debug_tag(tag: &str, transport: Transport) -> String {
    if matches!(transport, Transport::Oci | Transport::OciArchive) {
        return format!("{tag}-debug");
    }
    let slash = tag.rfind('/').map_or(0, |i| i + 1);
    if tag[slash..].contains(':') {
        format!("{tag}-debug")
    } else {
        format!("{tag}:latest-debug")
    }
}

/// Resolves the tools of `opts` in the toolbox (`--debug-from`, else `default`) against the
/// slim tree `slim` (whose content is in `slim_store`).
pub fn resolve(
    opts: &DebugOptions,
    default: Toolbox<'_>,
    slim: &FsTree,
    slim_store: &ContentStore,
) -> Result<Tools, Error> {
    match &opts.from {
        Some(r) => {
            let image = whittle_image::open(r)?;
            let view = image.config.view();
            let flat =
                whittle_fstree::flatten(&image, whittle_fstree::FlattenOptions::default(), None)?;
            let name = r.to_string();
            let tb = Toolbox {
                name: &name,
                tree: &flat.tree,
                store: &flat.store,
                view: &view,
            };
            tools_layer(opts, tb, slim, slim_store)
        }
        None => tools_layer(opts, default, slim, slim_store),
    }
}

/// [`resolve`] with the traced fat image as the default toolbox.
pub fn tools_for(opts: &DebugOptions, traced: &Traced, slim: &FsTree) -> Result<Tools, Error> {
    let name = traced.src.to_string();
    let tb = Toolbox {
        name: &name,
        tree: &traced.fat.flat.tree,
        store: &traced.fat.flat.store,
        view: &traced.view,
    };
    resolve(opts, tb, slim, &traced.fat.flat.store)
}

/// Paths where the slim image's version wins over a different one in the toolbox: the user
/// database is the app's, and the tools only read it; the loader cache of the app's image
/// differs from its base's after any package install, and the tools' libraries are found in
/// the multiarch directories without it.
const SLIM_WINS: &[&[u8]] = &[
    b"etc/passwd",
    b"etc/group",
    b"etc/nsswitch.conf",
    b"etc/ld.so.cache",
];

fn tools_layer(
    opts: &DebugOptions,
    tb: Toolbox<'_>,
    slim: &FsTree,
    slim_store: &ContentStore,
) -> Result<Tools, Error> {
    let dcfg = config_of(tb.view);
    let path = dcfg.path_var().to_string();
    let mut sel = Selection::new(tb.tree, tb.store, &[]).map_err(Error::Usage)?;
    let (names, explicit): (Vec<String>, bool) = match &opts.tools {
        Some(t) => (t.clone(), true),
        None => (DEFAULT_TOOLS.iter().map(|s| s.to_string()).collect(), false),
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match sel.add_exe(&name, &dcfg, Reason::Include { arg: name.clone() }) {
            Some(p) => found.push((name, p)),
            None if explicit => {
                return Err(Error::Usage(format!(
                    "--debug-tools {name}: no executable of that name in the PATH of {} ({path})",
                    tb.name
                )))
            }
            None => missing.push(name),
        }
    }
    sel.complete();
    let all = sel.slim_tree();
    let mut same: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (k, n) in all.iter() {
        if k.is_empty() || n.is_dir() {
            continue;
        }
        let Some(s) = slim.get(k) else { continue };
        let identical = same_content(n, tb.store, s, slim_store)
            .map_err(|e| Error::Usage(format!("{}: reading {}: {e}", tb.name, display_path(k))))?;
        if !identical && !SLIM_WINS.contains(&k.as_slice()) {
            return Err(Error::Usage(format!(
                "debug tools from {}: {} differs from the slim image's (same path, other content); \
                 the tools would change what the app loads: use a toolbox on the same base \
                 (--debug-from)",
                tb.name,
                display_path(k)
            )));
        }
        same.insert(k.clone());
    }
    let own = |k: &[u8], n: &Node| {
        if n.is_dir() {
            slim.get(k).is_none()
        } else {
            !same.contains(k)
        }
    };
    let mut tree = all.clone();
    tree.retain(|k, n| own(k, n) || (n.is_dir() && all.descendants(k).any(|(dk, dn)| own(dk, dn))));
    Ok(Tools {
        tree,
        store: tb.store.clone(),
        found,
        missing,
        toolbox: tb.name.to_string(),
    })
}

/// Same kind and content (regular files by bytes, symlinks by target); metadata aside.
fn same_content(
    a: &Node,
    astore: &ContentStore,
    b: &Node,
    bstore: &ContentStore,
) -> std::io::Result<bool> {
    match (&a.kind, &b.kind) {
        (NodeKind::File { size: sa, .. }, NodeKind::File { size: sb, .. }) => {
            if sa != sb {
                return Ok(false);
            }
            let (mut ra, mut rb) = (astore.open(a)?, bstore.open(b)?);
            let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
            loop {
                let n = read_full(&mut ra, &mut ba)?;
                let m = read_full(&mut rb, &mut bb)?;
                if n != m || ba[..n] != bb[..m] {
                    return Ok(false);
                }
                if n == 0 {
                    return Ok(true);
                }
            }
        }
        (NodeKind::Symlink(x), NodeKind::Symlink(y)) => Ok(x == y),
        (x, y) => Ok(std::mem::discriminant(x) == std::mem::discriminant(y)),
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The debug config: the slim one, labelled with the slim config's digest, with one more
/// history entry naming the tools.
pub fn config(
    slim_config: &serde_json::Value,
    slim_digest: &str,
    tools: &Tools,
) -> serde_json::Value {
    let mut c = slim_config.clone();
    c["config"]["Labels"][DEBUG_OF_LABEL] = serde_json::json!(slim_digest);
    let names: Vec<&str> = tools.found.iter().map(|(n, _)| n.as_str()).collect();
    let mut h = serde_json::json!({
        "created_by": format!("whittle debug tools: {}", names.join(",")),
        "comment": format!("whittle {} debug variant: tools layer", env!("CARGO_PKG_VERSION")),
    });
    if let Some(w) = crate::layers::created(slim_config) {
        h["created"] = w;
    }
    if let Some(hist) = c["history"].as_array_mut() {
        hist.push(h);
    }
    c
}

/// Writes the debug variant: `plans` (the slim image's layers) plus the tools layer.
pub fn write_variant(
    dest: Destination,
    plans: &[LayerPlan<'_>],
    tools: &Tools,
    slim_config: &serde_json::Value,
    slim: &Written,
    slim_tag: Option<&str>,
    opts: &BuildOptions,
) -> Result<DebugReport, Error> {
    let transport = dest.reference().transport;
    let mut all: Vec<LayerPlan<'_>> = plans.to_vec();
    all.push(LayerPlan {
        role: Role::Tools,
        tree: &tools.tree,
        store: &tools.store,
    });
    let tag = slim_tag.map(|t| debug_tag(t, transport));
    let config = config(slim_config, &slim.config_digest, tools);
    let w = write(dest, &all, config, tag.clone(), opts)?;
    let layer = w.layers.last().cloned().expect("the tools layer");
    Ok(DebugReport {
        destination: w.destination,
        tag,
        config_digest: w.config_digest,
        debug_of: slim.config_digest.clone(),
        toolbox: tools.toolbox.clone(),
        tools: tools.found.iter().map(|(n, _)| n.clone()).collect(),
        missing_tools: tools.missing.clone(),
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_sit_beside_the_slim_ones() {
        let d = destination(&ImageRef::parse("docker-archive:out/web.tar:shop/web:1.4").unwrap());
        assert_eq!(
            d.to_string(),
            "docker-archive:out/web-debug.tar:shop/web:1.4-debug"
        );
        let d = destination(&ImageRef::parse("docker-daemon:shop/web:1.4").unwrap());
        assert_eq!(d.to_string(), "docker-daemon:shop/web:1.4-debug");
        let d = destination(&ImageRef::parse("oci:/x/lay:v1").unwrap());
        assert_eq!(d.to_string(), "oci:/x/lay-debug:v1-debug");
        assert_eq!(
            debug_tag("reg:5000/app", Transport::DockerArchive),
            "reg:5000/app:latest-debug"
        );
    }
}
