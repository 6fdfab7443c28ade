//! `whittle family build`: slim images of several apps on one shared base layer.
//!
//! Two slim images built alone from the same fat base get different base layers (each keeps
//! only what it needs), so nothing is shared on disk or in a registry. A family composes
//! `whittle build`'s stages over its members so that it is:
//! 1. **trace, select, verify** each member as `whittle build` does (or take the cached
//!    result when source, args and whittle version are unchanged);
//! 2. **base**: the union of the kept files the base provides unchanged — or, when a lock
//!    exists, exactly the locked list, so adding a member never changes the base;
//! 3. **compose**: each member's selection plus the base paths it has, verified again when
//!    that added anything (the image written is the image verified);
//! 4. **split**: the shared base layer (written from the base image itself, so it is
//!    byte-identical in every member) and each member's app layer;
//! 5. **write** every member (and debug variant) only after every member passed.

pub mod report;
pub mod spec;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use whittle_build::debug::{self, Toolbox, Tools};
use whittle_build::layers::{self, Role};
use whittle_build::report::Status;
use whittle_build::select::{Reason, Selection};
use whittle_build::{BuildOptions, LayerPlan, Opened, Progress, Source, Traced};
use whittle_fstree::{FlattenOptions, Flattened, FsTree};
use whittle_image::write::Destination;
use whittle_image::Digest;

use crate::report::{BaseReport, FamilyReport, MemberReport, Outside, Totals};
pub use crate::spec::{FamilySpec, MemberSpec};
use crate::store::{Cache, CacheEntry, Lock};

pub const BASE_NAME_LABEL: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST_LABEL: &str = "org.opencontainers.image.base.digest";
/// Docker 20.10 keeps config labels but drops manifest annotations: the shared layer's
/// diff_id goes into the config too.
pub const BASE_DIFF_ID_LABEL: &str = "org.whittle.base.diff_id";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with an input file (the family file, the lock), naming it.
    #[error("{}: {message}", path.display())]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("member {member}: {source}")]
    Build {
        member: String,
        #[source]
        source: Box<whittle_build::Error>,
    },
    /// A member whose lowest layers are not the family's base.
    #[error("member {member}: built on {found}, not on the family's base {base}")]
    OtherBase {
        member: String,
        found: String,
        base: String,
    },
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    #[error(transparent)]
    Tree(#[from] whittle_fstree::Error),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub(crate) fn file(path: &std::path::Path, message: impl Into<String>) -> Error {
        Error::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    fn member(name: &str, e: whittle_build::Error) -> Error {
        match e {
            whittle_build::Error::Interrupted => Error::Interrupted,
            e => Error::Build {
                member: name.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// A member with its build options (parsed from its `args` by the CLI, with the parser
/// `whittle build` uses).
#[derive(Debug, Clone)]
pub struct Member {
    pub spec: MemberSpec,
    pub opts: BuildOptions,
}

#[derive(Debug, Clone, Default)]
pub struct FamilyOptions {
    /// Recompute the base from the members (and rewrite the lock).
    pub rebase: bool,
}

/// The family's base: the layers every member starts with, flattened.
struct Base {
    reference: Option<String>,
    digest: String,
    layers: Vec<Digest>,
    flat: Flattened,
}

/// One member after the first stage.
struct First {
    cached: Option<CacheEntry>,
    /// Traced in this build (its extraction is alive until it is composed).
    traced: Option<Traced>,
    own: BTreeMap<Vec<u8>, BTreeSet<Reason>>,
    status: Status,
    notes: Vec<String>,
}

/// One member ready to be written.
struct Planned {
    fat: Opened,
    app: FsTree,
    tools: Option<Tools>,
    status: Status,
    traced: bool,
    cached: bool,
    independent: u64,
    outside: Outside,
    composed_keys: BTreeSet<Vec<u8>>,
    own_keys: BTreeSet<Vec<u8>>,
    notes: Vec<String>,
}

/// Builds the family. Returns the report also when a member failed verification (then
/// `written` is false and nothing was written; the CLI exits 3).
pub fn build(
    spec: &FamilySpec,
    members: &[Member],
    fopts: &FamilyOptions,
    progress: &Progress<'_>,
) -> Result<FamilyReport, Error> {
    // Everything that can be refused without work, first.
    let base = open_base(spec, members)?;
    let mut dests: Vec<(Destination, Option<Destination>)> = Vec::new();
    for m in members {
        // A family writes into its output directory as a build script would (`out/`).
        if let Some(parent) = m.spec.dest.path.parent().filter(|p| {
            m.spec.dest.transport != whittle_image::Transport::DockerDaemon
                && !p.as_os_str().is_empty()
        }) {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e.to_string()))?;
        }
        let d = whittle_build::prepare(&m.spec.source, &m.spec.dest, &m.opts)
            .map_err(|e| Error::member(&m.spec.name, e))?;
        let dd = match &m.opts.debug {
            Some(_) => Some(
                Destination::prepare(&debug::destination(&m.spec.dest))
                    .map_err(|e| Error::member(&m.spec.name, e.into()))?,
            ),
            None => None,
        };
        dests.push((d, dd));
    }
    let lock = if fopts.rebase {
        None
    } else {
        Lock::read(&spec.lock)?
    };
    let n_base = base.layers.len() as u32;
    let base_ids: Vec<String> = base.layers.iter().map(|d| d.to_string()).collect();
    if let Some(l) = &lock {
        if l.source_layers != base_ids {
            return Err(Error::file(
                &spec.lock,
                format!(
                    "made for base layers {}, but the base is now {}; --rebase makes a new lock",
                    l.source_layers.join(","),
                    base_ids.join(",")
                ),
            ));
        }
    }

    // 1. trace, select, verify each member — or take its cached result.
    let cache = Cache::new();
    let mut firsts: Vec<First> = Vec::new();
    for m in members {
        let stage = |s: &str| (progress.stage)(&format!("{}: {s}", m.spec.name));
        let p = Progress {
            stage: &stage,
            bytes: progress.bytes,
        };
        let image = whittle_image::open(&m.spec.source)?;
        let key = Cache::key(&image.config_digest.to_string(), &m.spec.args);
        if let Some(c) = cache.get(&key) {
            let own = CacheEntry::keys(&c.own)
                .into_iter()
                .map(|k| (k, BTreeSet::new()))
                .collect();
            firsts.push(First {
                status: status_of(&c.verification),
                cached: Some(c),
                traced: None,
                own,
                notes: Vec::new(),
            });
            continue;
        }
        let (traced, own, status, notes) = trace_member(m, &p)?;
        firsts.push(First {
            cached: None,
            traced: Some(traced),
            own,
            status,
            notes,
        });
    }

    // 2. the base.
    let (base_keys, lock_state) = match &lock {
        Some(l) => (l.keys(), "honoured"),
        None => {
            let trees: Vec<Option<&FsTree>> = firsts
                .iter()
                .map(|f| f.traced.as_ref().map(|t| &t.fat.flat.tree))
                .collect();
            // A cached member's tree is read again below; its own selection is enough to
            // know which base paths it keeps, but not whether it deleted others: open it.
            let opened: Vec<Option<Opened>> = firsts
                .iter()
                .zip(members)
                .map(|(f, m)| match f.traced {
                    Some(_) => Ok(None),
                    None => open_member(m, progress).map(Some),
                })
                .collect::<Result<_, Error>>()?;
            let trees: Vec<&FsTree> = trees
                .iter()
                .zip(&opened)
                .map(|(t, o)| t.unwrap_or_else(|| &o.as_ref().expect("opened").flat.tree))
                .collect();
            let keys = union_base(&base.flat.tree, n_base, &trees, &firsts);
            let state = if fopts.rebase { "rebased" } else { "written" };
            (keys, state)
        }
    };
    let base_tree = base_layer_tree(&base.flat.tree, &base_keys);
    let base_plan = LayerPlan {
        role: Role::Base,
        tree: &base_tree,
        store: &base.flat.store,
    };
    let base_measured = whittle_build::measure(&[base_plan])
        .map_err(|e| Error::member("(base)", e))?
        .remove(0);
    let base_diff_id = base_measured.diff_id.clone().unwrap_or_default();
    if let Some(l) = &lock {
        if l.diff_id != base_diff_id {
            return Err(Error::file(
                &spec.lock,
                format!(
                    "its file list gives base layer {base_diff_id}, not the locked {}; \
                     --rebase makes a new lock",
                    l.diff_id
                ),
            ));
        }
    }

    // 3. compose, verify where the base added something, split.
    let labels = vec![
        (
            BASE_NAME_LABEL,
            base.reference
                .clone()
                .unwrap_or_else(|| members[0].spec.source.to_string()),
        ),
        (BASE_DIGEST_LABEL, base.digest.clone()),
        (BASE_DIFF_ID_LABEL, base_diff_id.clone()),
    ];
    let mut planned: Vec<Planned> = Vec::new();
    for (f, m) in firsts.into_iter().zip(members) {
        let stage = |s: &str| (progress.stage)(&format!("{}: {s}", m.spec.name));
        let p = Progress {
            stage: &stage,
            bytes: progress.bytes,
        };
        let b = BaseTrees {
            full: &base.flat.tree,
            layer: &base_tree,
            keys: &base_keys,
            diff_id: &base_diff_id,
            n: n_base,
        };
        planned.push(compose(m, f, &b, &p)?);
    }

    let failed = planned.iter().any(|p| p.status == Status::Failed);
    let mut reports = Vec::new();
    let mut unique = base_measured.size;
    for ((p, m), (dest, ddest)) in planned.iter().zip(members).zip(dests) {
        let app_plan = LayerPlan {
            role: Role::App,
            tree: &p.app,
            store: &p.fat.flat.store,
        };
        let plans = [base_plan, app_plan];
        let config = whittle_build::slim_config(&p.fat, &m.opts, &plans, &labels);
        let tag = whittle_build::slim_tag(&p.fat, &m.spec.dest, &m.opts);
        let (layers, destination, config_digest, debug_report) = if failed {
            let l = whittle_build::measure(&plans).map_err(|e| Error::member(&m.spec.name, e))?;
            (l, m.spec.dest.to_string(), None, None)
        } else {
            (progress.stage)(&format!("{}: writing", m.spec.name));
            let w = whittle_build::write(dest, &plans, config.clone(), tag.clone(), &m.opts)
                .map_err(|e| Error::member(&m.spec.name, e))?;
            let dr = match (&p.tools, ddest) {
                (Some(t), Some(dd)) => Some(
                    debug::write_variant(dd, &plans, t, &config, &w, tag.as_deref(), &m.opts)
                        .map_err(|e| Error::member(&m.spec.name, e))?,
                ),
                _ => None,
            };
            (w.layers, w.destination, Some(w.config_digest), dr)
        };
        let app_size = layers.get(1).map_or(0, |l| l.size);
        unique += app_size + debug_report.as_ref().map_or(0, |d| d.layer.size);
        let mut notes = p.notes.clone();
        if let Some(t) = &p.tools {
            if !t.missing.is_empty() {
                notes.push(format!(
                    "debug tools not in {}: {}",
                    t.toolbox,
                    t.missing.join(", ")
                ));
            }
        }
        reports.push(MemberReport {
            name: m.spec.name.clone(),
            source: m.spec.source.to_string(),
            destination,
            tag,
            config_digest,
            cached: p.cached,
            traced: p.traced,
            verification: p.status,
            size: layers.iter().map(|l| l.size).sum(),
            base_size: base_measured.size,
            app_size,
            app_diff_id: layers.get(1).and_then(|l| l.diff_id.clone()),
            independent_size: p.independent,
            outside_lock: p.outside,
            layers,
            debug: debug_report,
            notes,
        });
    }

    // What the next build can reuse, and the lock, once everything is written.
    if !failed {
        for ((p, m), r) in planned.iter().zip(members).zip(&reports) {
            let e = CacheEntry {
                schema: store::CACHE_SCHEMA.into(),
                source_config_digest: p.fat.image.config_digest.to_string(),
                args: m.spec.args.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                own: CacheEntry::hex(&p.own_keys),
                composed: CacheEntry::hex(&p.composed_keys),
                base_diff_id: base_diff_id.clone(),
                verification: match r.verification {
                    Status::Skipped => "skipped",
                    _ => "passed",
                }
                .into(),
            };
            let key = Cache::key(&e.source_config_digest, &m.spec.args);
            // A cache that cannot be written costs the next build time, nothing else.
            let _ = cache.put(&key, &e);
        }
        if lock.is_none() {
            Lock::new(base_ids.clone(), base_diff_id.clone(), &base_keys).write(&spec.lock)?;
        }
    }
    let independent: u64 = reports.iter().map(|r| r.independent_size).sum();
    Ok(FamilyReport {
        schema: report::SCHEMA,
        family: spec.path.display().to_string(),
        written: !failed,
        base: BaseReport {
            reference: base.reference.clone(),
            digest: base.digest.clone(),
            source_layers: base_ids,
            diff_id: base_diff_id,
            size: base_measured.size,
            files: base_tree.len().saturating_sub(1),
            lock: lock_state,
            lock_file: spec.lock.display().to_string(),
        },
        total: Totals {
            unique_bytes: unique,
            independent_bytes: independent,
            ratio: if unique == 0 {
                0.0
            } else {
                independent as f64 / unique as f64
            },
            rebase_would_move: reports.iter().map(|r| r.outside_lock.bytes).sum(),
        },
        members: reports,
    })
}

fn status_of(s: &str) -> Status {
    match s {
        "skipped" => Status::Skipped,
        _ => Status::Passed,
    }
}

/// The base image's layers every member must start with, flattened; without `base`, the
/// members' common lowest layer.
fn open_base(spec: &FamilySpec, members: &[Member]) -> Result<Base, Error> {
    let mut member_ids = Vec::new();
    for m in members {
        let image = whittle_image::open(&m.spec.source)?;
        let ids = image
            .config
            .diff_ids()
            .map_err(|e| Error::file(&m.spec.source.path, e))?;
        member_ids.push((m, ids, image));
    }
    let (reference, mut image) = match &spec.base {
        Some(r) => (Some(r.to_string()), whittle_image::open(r)?),
        None => (None, member_ids[0].2.clone()),
    };
    let all_ids = image
        .config
        .diff_ids()
        .map_err(|e| Error::file(&image.reference.path, e))?;
    let ids: Vec<Digest> = match &spec.base {
        Some(_) => all_ids,
        None => all_ids.into_iter().take(1).collect(),
    };
    for (m, mids, _) in &member_ids {
        if let Some(i) = (0..ids.len()).find(|&i| mids.get(i) != Some(&ids[i])) {
            return Err(Error::OtherBase {
                member: m.spec.name.clone(),
                found: mids
                    .get(i)
                    .map_or_else(|| "fewer layers".into(), |d| d.to_string()),
                base: ids[i].to_string(),
            });
        }
    }
    let digest = match &spec.base {
        Some(_) => image.config_digest.to_string(),
        None => ids[0].to_string(),
    };
    image.layers.truncate(ids.len());
    let flat = whittle_fstree::flatten(&image, FlattenOptions::default(), None)?;
    Ok(Base {
        reference,
        digest,
        layers: ids,
        flat,
    })
}

fn open_member(m: &Member, progress: &Progress<'_>) -> Result<Opened, Error> {
    whittle_build::open(&m.spec.source, &m.opts, progress)
        .map_err(|e| Error::member(&m.spec.name, e))
}

type Own = BTreeMap<Vec<u8>, BTreeSet<Reason>>;

/// Stage 1 for an uncached member: `whittle build`'s trace, select and verify.
fn trace_member(m: &Member, p: &Progress<'_>) -> Result<(Traced, Own, Status, Vec<String>), Error> {
    let e = |err| Error::member(&m.spec.name, err);
    let traced = whittle_build::trace(&m.spec.source, &m.opts, p).map_err(e)?;
    let (mut sel, mut notes) = whittle_build::select(&traced, &m.opts).map_err(e)?;
    let v = whittle_build::verify(&traced, &mut sel, &m.opts, &m.spec.dest, p).map_err(e)?;
    notes.extend(v.notes);
    let own = sel.kept().clone();
    drop(sel);
    Ok((traced, own, v.status, notes))
}

/// Whether `k` of a member's tree is what the base layers gave it, unchanged.
fn from_base(tree: &FsTree, base: &FsTree, n_base: u32, k: &[u8]) -> bool {
    match (tree.get(k), base.get(k)) {
        (Some(n), Some(b)) if n.is_dir() => b.is_dir(),
        (Some(n), Some(_)) => n.layer < n_base,
        _ => false,
    }
}

/// The union, over members, of kept paths the base provides unchanged — but not a file some
/// member's own layers delete (it would reappear in that member), nor a name that is not
/// UTF-8 (the lock lists names as text).
fn union_base(
    base: &FsTree,
    n_base: u32,
    trees: &[&FsTree],
    firsts: &[First],
) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    for (tree, f) in trees.iter().zip(firsts) {
        for k in f.own.keys() {
            if !k.is_empty() && from_base(tree, base, n_base, k) && std::str::from_utf8(k).is_ok() {
                keys.insert(k.clone());
            }
        }
    }
    keys.retain(|k| trees.iter().all(|t| t.get(k).is_some()));
    keys
}

/// The base layer's tree: the base image's own nodes for `keys` and the directories on
/// their way, so its bytes depend on the base and the list only.
fn base_layer_tree(base: &FsTree, keys: &BTreeSet<Vec<u8>>) -> FsTree {
    let mut dirs: BTreeSet<&[u8]> = BTreeSet::new();
    for k in keys {
        let mut cur = k.as_slice();
        while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
            cur = &cur[..i];
            if !dirs.insert(cur) {
                break;
            }
        }
    }
    let mut t = base.clone();
    t.retain(|k, _| keys.contains(k) || dirs.contains(k));
    t
}

/// Stages 3 and 4 for one member: its selection plus the base paths it has (verified again
/// when that added something), split on the base layer, and its tools.
/// The base as a member is composed on it.
struct BaseTrees<'a> {
    /// The base image's first `n` layers, flattened.
    full: &'a FsTree,
    /// The slim base layer.
    layer: &'a FsTree,
    keys: &'a BTreeSet<Vec<u8>>,
    diff_id: &'a str,
    n: u32,
}

fn compose(m: &Member, f: First, b: &BaseTrees<'_>, p: &Progress<'_>) -> Result<Planned, Error> {
    let (base_keys, base_diff_id, base_tree, n_base) = (b.keys, b.diff_id, b.layer, b.n);
    let e = |err| Error::member(&m.spec.name, err);
    let reuse = f
        .cached
        .as_ref()
        .filter(|c| c.base_diff_id == base_diff_id && f.traced.is_none());
    let mut notes = f.notes;
    let (fat, composed_keys, own_keys, status, traced) = match reuse {
        Some(c) => {
            let fat = open_member(m, p)?;
            let own = CacheEntry::keys(&c.own);
            (fat, CacheEntry::keys(&c.composed), own, f.status, false)
        }
        None => {
            // Traced in stage 1, or cached on another base: traced now.
            let (traced, own, status) = match f.traced {
                Some(t) => (t, f.own, f.status),
                None => {
                    let (t, own, status, n) = trace_member(m, p)?;
                    notes.extend(n);
                    (t, own, status)
                }
            };
            let own_keys: BTreeSet<Vec<u8>> = own.keys().cloned().collect();
            let tree = &traced.fat.flat.tree;
            let mut sel = Selection::restore(tree, &traced.fat.flat.store, &m.opts.excludes, own)
                .map_err(|err| e(whittle_build::Error::Usage(err)))?;
            let mut added = 0usize;
            for k in base_keys {
                if !sel.is_kept(k)
                    && from_base(tree, base_tree, n_base, k)
                    && sel.keep(k, Reason::FamilyBase)
                {
                    added += 1;
                }
            }
            let mut status = status;
            if added > 0 && status != Status::Failed {
                sel.complete();
                let v = whittle_build::verify(&traced, &mut sel, &m.opts, &m.spec.dest, p)
                    .map_err(e)?;
                notes.extend(v.notes);
                status = v.status;
            }
            let keys: BTreeSet<Vec<u8>> = sel.kept().keys().cloned().collect();
            drop(sel);
            (traced.into_opened(), keys, own_keys, status, true)
        }
    };
    let tree = &fat.flat.tree;
    let mut composed = tree.clone();
    composed.retain(|k, _| composed_keys.contains(k));
    let app = layers::app_on_base(&composed, base_tree, n_base);
    // Files it needs from the base that the (locked) base layer lacks.
    let mut outside = Outside::default();
    for (k, n) in composed.iter() {
        if !k.is_empty()
            && !n.is_dir()
            && from_base(tree, b.full, n_base, k)
            && base_tree.get(k).is_none()
        {
            outside.files += 1;
            outside.bytes += n.size();
        }
    }
    let mut own_tree = tree.clone();
    own_tree.retain(|k, _| own_keys.contains(k));
    let parts = layers::split(&own_tree, 2);
    let plans: Vec<LayerPlan<'_>> = parts
        .iter()
        .map(|(role, t)| LayerPlan {
            role: *role,
            tree: t,
            store: &fat.flat.store,
        })
        .collect();
    let independent = whittle_build::measure(&plans)
        .map_err(e)?
        .iter()
        .map(|l| l.size)
        .sum();
    let tools = match &m.opts.debug {
        Some(d) => {
            (p.stage)("resolving the debug tools");
            let name = m.spec.source.to_string();
            let tb = Toolbox {
                name: &name,
                tree,
                store: &fat.flat.store,
                view: fat.view(),
            };
            Some(debug::resolve(d, tb, &composed, &fat.flat.store).map_err(e)?)
        }
        None => None,
    };
    Ok(Planned {
        fat,
        app,
        tools,
        status,
        traced,
        cached: reuse.is_some(),
        independent,
        outside,
        composed_keys,
        own_keys,
        notes,
    })
}
