//! The slim image's layers and config.
//!
//! Two layers by default, as the talk recommends: the first holds the kept files the source's
//! lowest layer provided (libc, the loader, /etc basics — shared by every slim image built on
//! the same base, so a registry and a node store it once), the second everything else (the
//! application). Each layer's tar is written from the tree in path order by
//! `whittle-layer`, so the same selection always gives the same digests.

use serde_json::{json, Value};
use whittle_fstree::FsTree;

/// Which part of the slim image a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Kept files of the source's lowest layer.
    Base,
    /// Everything else.
    App,
    /// The whole slim image (`--layers 1`).
    All,
    /// The debug variant's tools.
    Tools,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::App => "app",
            Role::All => "all",
            Role::Tools => "tools",
        }
    }
}

/// Splits the slim tree into the layers to write. With two layers: a path goes to the base
/// layer when the source's lowest layer wrote it (directories on the way to base paths come
/// along, with their final metadata); the app layer has the rest plus the directories on
/// their way, repeated with the same metadata so the layer stands on its own. An empty app
/// layer (everything came from the base) is not written.
pub fn split(slim: &FsTree, layers: u8) -> Vec<(Role, FsTree)> {
    if layers <= 1 {
        return vec![(Role::All, slim.clone())];
    }
    let in_base =
        |k: &[u8]| slim.get(k).is_some_and(|n| n.layer == 0) || has_base_descendant(slim, k);
    let mut base = slim.clone();
    base.retain(|k, _| in_base(k));
    let app = app_layer(slim, |k, n| {
        !(n.layer == 0 || (n.is_dir() && base.get(k).is_some()))
    });
    let app_has_content = app
        .iter()
        .any(|(k, _)| !k.is_empty() && base.get(k).is_none());
    if !app_has_content {
        return vec![(Role::Base, base)];
    }
    vec![(Role::Base, base), (Role::App, app)]
}

/// The app layer on a family's shared base layer `base` (made from the base image's own
/// first `base_layers` layers): every path of `slim` that the base layer does not provide as
/// is — a file the base provides unchanged stays out, a base directory the member's layers
/// gave other metadata is repeated — plus the directories on the way.
pub fn app_on_base(slim: &FsTree, base: &FsTree, base_layers: u32) -> FsTree {
    app_layer(slim, |k, n| match base.get(k) {
        None => true,
        Some(b) if n.is_dir() => !(b.is_dir() && b.meta == n.meta),
        Some(_) => n.layer >= base_layers,
    })
}

/// The paths of `slim` that are `own`, and the directories on their way.
fn app_layer(slim: &FsTree, own: impl Fn(&[u8], &whittle_fstree::Node) -> bool) -> FsTree {
    let mut app = slim.clone();
    app.retain(|k, n| own(k, n) || (n.is_dir() && slim.descendants(k).any(|(dk, dn)| own(dk, dn))));
    app
}

fn has_base_descendant(t: &FsTree, dir: &[u8]) -> bool {
    t.get(dir).is_some_and(|n| n.is_dir()) && t.descendants(dir).any(|(_, n)| n.layer == 0)
}

/// The creation time of the slim image: `SOURCE_DATE_EPOCH` when set, else the source's.
pub fn created(source: &Value) -> Option<Value> {
    whittle_image::source_date_epoch()
        .map(|t| json!(t))
        .or_else(|| source.get("created").cloned())
}

/// The slim config: the source's, with the user rewritten if asked, labels naming the source
/// and whittle's version, and one history entry per written layer.
pub fn config(
    source: &Value,
    source_digest: &str,
    user: Option<&str>,
    roles: &[Role],
    command_line: &str,
) -> Value {
    let mut c = source.clone();
    if !c.get("config").is_some_and(Value::is_object) {
        c["config"] = json!({});
    }
    if let Some(u) = user {
        c["config"]["User"] = json!(u);
    }
    if !c["config"].get("Labels").is_some_and(Value::is_object) {
        c["config"]["Labels"] = json!({});
    }
    c["config"]["Labels"]["org.whittle.source"] = json!(source_digest);
    c["config"]["Labels"]["org.whittle.version"] = json!(env!("CARGO_PKG_VERSION"));
    let when = created(source);
    if let Some(w) = &when {
        c["created"] = w.clone();
    }
    let history: Vec<Value> = roles
        .iter()
        .map(|r| {
            let mut h = json!({
                "created_by": command_line,
                "comment": format!("whittle {} slim build: {} layer", env!("CARGO_PKG_VERSION"), r.name()),
            });
            if let Some(w) = &when {
                h["created"] = w.clone();
            }
            h
        })
        .collect();
    c["history"] = Value::Array(history);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_fstree::{display_path, Entry, EntryKind};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry::new(path, kind, 0o755)
    }

    fn paths(t: &FsTree) -> Vec<String> {
        t.iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, _)| display_path(k))
            .collect()
    }

    #[test]
    fn base_files_go_to_layer_one_and_app_files_to_layer_two() {
        let mut t = FsTree::new(false);
        let file = EntryKind::File { size: 0, offset: 0 };
        t.apply(
            0,
            &[
                entry("etc", EntryKind::Dir),
                entry("etc/passwd", file.clone()),
                entry("usr", EntryKind::Dir),
                entry("usr/lib", EntryKind::Dir),
                entry("usr/lib/libc.so.6", file.clone()),
            ],
        )
        .unwrap();
        t.apply(
            1,
            &[
                entry("usr/sbin", EntryKind::Dir),
                entry("usr/sbin/nginx", file.clone()),
                // a hardlink made by the app layer to a base file belongs to the app layer
                entry("opt", EntryKind::Dir),
                entry("opt/hl", EntryKind::Hardlink(b"usr/lib/libc.so.6".to_vec())),
                // a later layer rewrote a base directory's entry
                entry("etc", EntryKind::Dir),
            ],
        )
        .unwrap();
        let parts = split(&t, 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, Role::Base);
        assert_eq!(
            paths(&parts[0].1),
            [
                "/etc",
                "/etc/passwd",
                "/usr",
                "/usr/lib",
                "/usr/lib/libc.so.6"
            ]
        );
        assert_eq!(parts[1].0, Role::App);
        assert_eq!(
            paths(&parts[1].1),
            ["/opt", "/opt/hl", "/usr", "/usr/sbin", "/usr/sbin/nginx"]
        );
        assert_eq!(split(&t, 1).len(), 1);
    }

    #[test]
    fn config_gets_labels_user_and_history() {
        let src = json!({"created": "2025-05-20T00:00:00Z", "config": {"User": "0"},
                         "history": [{"created_by": "x"}, {"created_by": "y"}]});
        let c = config(
            &src,
            "sha256:ab",
            Some("101:101"),
            &[Role::Base, Role::App],
            "whittle build",
        );
        assert_eq!(c["config"]["User"], "101:101");
        assert_eq!(c["config"]["Labels"]["org.whittle.source"], "sha256:ab");
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        assert_eq!(c["history"][1]["created"], "2025-05-20T00:00:00Z");
    }
}
