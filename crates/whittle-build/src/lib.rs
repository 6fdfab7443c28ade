//! `whittle build`: a minimal, reproducible image of at most two layers, proven to still do
//! what the fat image did.
//!
//! The stages, in order, each reading only what the previous ones produced:
//! 1. **open** the fat image and flatten it (layer windows, content read back by position);
//! 2. **trace**: run it in the sandbox with the probes and record every file it touches;
//! 3. **select** ([`select`]): trace evidence ∪ the static closure of the entrypoint and of
//!    every program the trace saw executed ∪ symlinks and parent directories on the way ∪
//!    what the config needs ∪ includes − excludes; every kept path carries its reasons,
//!    every dropped byte a class;
//! 4. **verify** (`rounds`, comparing with [`verify`]): run the slim tree in the same sandbox
//!    with the same probes and compare; on a difference, add what the slim run looked for in
//!    vain and try again;
//! 5. **write** ([`layers`]): base and app layers, deterministic, to any destination.
//!
//! Nothing is written to the destination unless verification passed (or was turned off), and
//! the destination is checked for writability before any work starts.

pub mod debug;
pub mod html;
pub mod layers;
pub mod report;
mod rounds;
pub mod select;
pub mod verify;

use std::collections::BTreeMap;
use std::time::Instant;

use whittle_deps::image::config_of;
use whittle_deps::Request;
use whittle_fstree::{display_path, ContentStore, FlattenOptions, Flattened, FsTree, NodeKind};
use whittle_image::compression::Compression;
use whittle_image::write::{Destination, LayerOut, NewImage};
use whittle_image::{ImageRef, Transport};
use whittle_layer::{write_layer, LayerOptions};
use whittle_rules::Rules;
use whittle_sandbox::{Outcome, PreparedImage};

use crate::layers::Role;
use crate::report::{
    BuildReport, Dropped, DroppedClass, KeptPath, LayerReport, RunSummary, Runs, Sizes, Status,
    Verification,
};
use crate::select::{Reason, Selection};

pub use report::SCHEMA;
pub use rounds::Verified;

/// Rounds of auto-include after the first verification.
pub const AUTO_INCLUDE_ROUNDS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] whittle_image::Error),
    #[error(transparent)]
    Tree(#[from] whittle_fstree::Error),
    #[error(transparent)]
    Sandbox(#[from] whittle_sandbox::Error),
    #[error("{0}")]
    Usage(String),
    /// The fat image itself did not run through the probes: there is nothing to verify
    /// against.
    #[error("{image}: the source image's own run failed ({outcome}): {message}")]
    FatRun {
        image: String,
        outcome: String,
        message: String,
    },
    #[error("interrupted")]
    Interrupted,
    /// Measuring the layers of a build that is not written (no file involved).
    #[error("measuring the slim layers: {0}")]
    Measure(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Probes and limits, as for `whittle trace`.
    pub run: whittle_sandbox::Options,
    pub includes: Vec<String>,
    pub include_exes: Vec<String>,
    pub excludes: Vec<String>,
    /// Replaces the config's `User` (the trace and verification run as this user too).
    pub user: Option<String>,
    /// 1 or 2.
    pub layers: u8,
    pub verify: bool,
    pub auto_include: bool,
    pub tag: Option<String>,
    pub compression: Option<Compression>,
    /// Also return every regular file of the source with its fate, for the HTML treemap.
    pub treemap: bool,
    /// Also write the debug variant (`--debug-variant`).
    pub debug: Option<debug::DebugOptions>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            run: whittle_sandbox::Options::default(),
            includes: Vec::new(),
            include_exes: Vec::new(),
            excludes: Vec::new(),
            user: None,
            layers: 2,
            verify: true,
            auto_include: true,
            tag: None,
            compression: None,
            treemap: false,
            debug: None,
        }
    }
}

/// Progress callbacks: `stage` when a stage starts, `bytes` while layers are read.
#[allow(missing_debug_implementations)]
pub struct Progress<'a> {
    pub stage: &'a dyn Fn(&str),
    pub bytes: Option<whittle_fstree::Progress<'a>>,
}

/// What `build` returns, also when verification failed (then `report.written` is false and
/// the caller exits 3).
#[derive(Debug)]
pub struct Built {
    pub report: BuildReport,
    /// Every regular file of the source with its fate (empty unless `treemap` was asked).
    pub treemap: Vec<html::TreemapFile>,
}

/// Builds the slim image of `src` into `dest`: the stages below, in order. `whittle family`
/// composes the same stages over several members.
pub fn build(
    src: &ImageRef,
    dest: &ImageRef,
    opts: &BuildOptions,
    progress: &Progress<'_>,
) -> Result<Built, Error> {
    let t_total = Instant::now();
    let destination = prepare(src, dest, opts)?;
    let debug_destination = match &opts.debug {
        Some(_) => Some(Destination::prepare(&debug::destination(dest))?),
        None => None,
    };
    let mut traced = trace(src, opts, progress)?;
    let mut timings = std::mem::take(&mut traced.timings);
    let t = Instant::now();
    let (mut sel, mut notes) = select(&traced, opts)?;
    let select_ms = ms(t);
    let t = Instant::now();
    let verified = verify(&traced, &mut sel, opts, dest, progress)?;
    let verify_ms = ms(t);
    let slim_tree = sel.slim_tree();
    let store = &traced.fat.flat.store;
    let parts = layers::split(&slim_tree, opts.layers);
    let plans: Vec<LayerPlan<'_>> = parts
        .iter()
        .map(|(role, tree)| LayerPlan {
            role: *role,
            tree,
            store,
        })
        .collect();
    // The tools layer is resolved before anything is written: a missing tool or a
    // conflicting toolbox leaves no slim image behind either.
    let tools = match &opts.debug {
        Some(d) => Some(debug::tools_for(d, &traced, &slim_tree)?),
        None => None,
    };
    let t = Instant::now();
    let config = slim_config(&traced, opts, &plans, &probe_labels(&traced.fat_run.probes));
    let tag = slim_tag(&traced, dest, opts);
    let passed = verified.status != Status::Failed;
    let (written, debug_report) = if passed {
        (progress.stage)("writing the slim image");
        let w = write(destination, &plans, config.clone(), tag.clone(), opts)?;
        let debug_report = match (tools, debug_destination) {
            (Some(tools), Some(d)) => {
                (progress.stage)("writing the debug variant");
                Some(debug::write_variant(
                    d,
                    &plans,
                    &tools,
                    &config,
                    &w,
                    tag.as_deref(),
                    opts,
                )?)
            }
            _ => None,
        };
        (Some(w), debug_report)
    } else {
        (None, None)
    };
    timings.insert("select", select_ms);
    if opts.verify {
        timings.insert("verify", verify_ms);
    }
    timings.insert("write", ms(t));
    notes.extend(verified.notes.iter().cloned());
    let mut built = report(
        &traced,
        sel,
        &parts,
        Finished {
            dest,
            tag,
            written,
            verified,
            notes,
            debug: debug_report,
            treemap: opts.treemap,
            timings,
        },
    )?;
    // Deleting the fat image's extraction is part of the build's time (on a busy disk, a
    // large part): measured rather than left to a drop after the report is made.
    let t = Instant::now();
    drop(traced);
    let timings = &mut built.report.timings_ms;
    timings.insert("cleanup", ms(t));
    timings.insert("total", ms(t_total));
    Ok(built)
}

/// Checks that can fail before any work: the options, and that the destination can be
/// written and is not the source.
pub fn prepare(src: &ImageRef, dest: &ImageRef, opts: &BuildOptions) -> Result<Destination, Error> {
    whittle_image::write::check_not_source(src, dest)?;
    if !matches!(opts.layers, 1 | 2) {
        return Err(Error::Usage(format!(
            "--layers {}: must be 1 or 2",
            opts.layers
        )));
    }
    if dest.transport == Transport::Rootfs {
        return Err(Error::Usage(format!(
            "{dest}: a slim build writes an image (docker-archive:, oci:, oci-archive:, docker-daemon:)"
        )));
    }
    Ok(Destination::prepare(dest)?)
}

/// The fat image, opened, extracted and run through the probes: what the later stages read.
#[derive(Debug)]
pub struct Traced {
    pub src: ImageRef,
    pub image: whittle_image::Image,
    /// The config as run (with `--user` applied).
    pub view: whittle_image::ConfigView,
    /// Uncompressed size of each source layer, bottom first.
    pub before_layers: Vec<u64>,
    pub fat: PreparedImage,
    pub fat_run: whittle_sandbox::Report,
    pub timings: BTreeMap<&'static str, u64>,
}

/// The fat image opened and flattened (no extraction, no run): enough to write layers from
/// a selection made earlier.
#[derive(Debug)]
pub struct Opened {
    pub image: whittle_image::Image,
    pub view: whittle_image::ConfigView,
    pub before_layers: Vec<u64>,
    pub flat: Flattened,
}

/// Stage 1a: open and flatten `src` (with `--user` applied to the config it is run with).
pub fn open(src: &ImageRef, opts: &BuildOptions, progress: &Progress<'_>) -> Result<Opened, Error> {
    (progress.stage)("reading the image");
    let image = whittle_image::open(src)?;
    let mut config_value = image.config.value.clone();
    if let Some(u) = &opts.user {
        if !config_value.get("config").is_some_and(|c| c.is_object()) {
            config_value["config"] = serde_json::json!({});
        }
        config_value["config"]["User"] = serde_json::json!(u);
    }
    let view = whittle_image::ImageConfig {
        value: config_value,
    }
    .view();
    // The uncompressed size of each source layer is known only once it has been read.
    let mut before_layers: Vec<u64> = Vec::new();
    let flat = whittle_fstree::flatten_with(
        &image,
        FlattenOptions::default(),
        progress.bytes,
        |_, entries, _| before_layers.push(entries.tar_size),
    )?;
    check_interrupt()?;
    check_includes(&flat, &view, opts, src)?;
    Ok(Opened {
        image,
        view,
        before_layers,
        flat,
    })
}

/// Stage 1: open, extract for the sandbox, and trace the fat image with the probes. Fails
/// when the fat image itself does not answer them (there would be nothing to verify against).
pub fn trace(
    src: &ImageRef,
    opts: &BuildOptions,
    progress: &Progress<'_>,
) -> Result<Traced, Error> {
    let mut timings: BTreeMap<&'static str, u64> = BTreeMap::new();
    let t = Instant::now();
    let o = open(src, opts, progress)?;
    (progress.stage)("extracting the image for the sandbox");
    let fat = PreparedImage::from_flattened(src.to_string(), o.view.clone(), o.flat)
        .map_err(|e| interrupted_or(e.into()))?;
    timings.insert("open", ms(t));
    check_interrupt()?;

    (progress.stage)("tracing the fat image");
    let t = Instant::now();
    let fat_run = whittle_sandbox::run(&fat, &opts.run)?;
    timings.insert("trace", ms(t));
    match fat_run.outcome {
        Outcome::Ok => {}
        Outcome::Interrupted => return Err(Error::Interrupted),
        o => {
            return Err(Error::FatRun {
                image: src.to_string(),
                outcome: outcome_name(o),
                message: {
                    let mut m = fat_run.error.clone().unwrap_or_default();
                    // The app's own last words say why (a port it may not bind, a missing file).
                    if let Some(last) = fat_run
                        .app
                        .stderr_tail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                    {
                        m.push_str(&format!("; its stderr ends: {}", last.trim()));
                    }
                    m
                },
            });
        }
    }
    // A probe the fat image did not answer verifies nothing: the slim image failing the same
    // way would "pass".
    if let Some(p) = fat_run.probes.iter().find(|p| !p.ok) {
        return Err(Error::FatRun {
            image: src.to_string(),
            outcome: "probe failed".into(),
            message: format!(
                "{} {} got no answer: {}",
                p.kind,
                p.target,
                p.error.as_deref().unwrap_or("no answer")
            ),
        });
    }
    Ok(Traced {
        src: src.clone(),
        image: o.image,
        view: o.view,
        before_layers: o.before_layers,
        fat,
        fat_run,
        timings,
    })
}

/// Stage 2: what the slim image keeps, from the trace, the static closure, the config and
/// the includes. Returns the selection and its notes.
pub fn select<'a>(
    traced: &'a Traced,
    opts: &BuildOptions,
) -> Result<(Selection<'a>, Vec<String>), Error> {
    let (tree, store) = (&traced.fat.flat.tree, &traced.fat.flat.store);
    let view = &traced.view;
    let fat_run = &traced.fat_run;
    let dcfg = config_of(view);
    let mut sel = Selection::new(tree, store, &opts.excludes).map_err(Error::Usage)?;
    let mut notes: Vec<String> = fat_run
        .recorders
        .notes
        .iter()
        .map(|n| format!("recorder: {n}"))
        .collect();
    let executed = sel.add_trace(&fat_run.files);
    let entry = Request {
        config: dcfg.clone(),
        paths: Vec::new(),
    };
    for m in sel.add_closure(&entry, |why| Reason::Static { why }) {
        notes.push(format!("static analysis: missing {m}"));
    }
    if !executed.is_empty() {
        let req = Request {
            config: dcfg.clone(),
            paths: executed,
        };
        sel.add_closure(&req, |why| Reason::Static { why });
    }
    keep_config_paths(&mut sel, view);
    // (Checked before the trace by `check_includes`.)
    for inc in &opts.includes {
        sel.add_include(inc, &dcfg);
    }
    for exe in &opts.include_exes {
        sel.add_exe(exe, &dcfg, Reason::Include { arg: exe.clone() });
    }
    sel.complete();
    Ok((sel, notes))
}

/// Stage 3: run the slim tree with the same probes, compare, auto-include on a difference.
pub fn verify(
    traced: &Traced,
    sel: &mut Selection<'_>,
    opts: &BuildOptions,
    dest: &ImageRef,
    progress: &Progress<'_>,
) -> Result<Verified, Error> {
    if !opts.verify {
        return Ok(Verified::skipped());
    }
    check_interrupt()?;
    let dcfg = config_of(&traced.view);
    let v = rounds::Verifier {
        fat: &traced.fat,
        fat_run: &traced.fat_run,
        opts,
        view: &traced.view,
        config: &dcfg,
        src: &traced.src,
        dest,
        progress,
    };
    let out = v.run(sel)?;
    check_interrupt()?;
    Ok(out)
}
/// One layer to write: its role, its tree and the store its content is read from (a family
/// writes its base layer from the base image and a tools layer from the toolbox).
#[derive(Debug, Clone, Copy)]
pub struct LayerPlan<'a> {
    pub role: Role,
    pub tree: &'a FsTree,
    pub store: &'a ContentStore,
}

/// What the write stage wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub destination: String,
    pub config_digest: String,
    pub layers: Vec<LayerReport>,
}

/// The slim config of a traced or opened source: the source's, with `--user`, whittle's
/// labels, `extra_labels`, and one history entry per layer of `plans`.
pub fn slim_config(
    traced: &dyn Source,
    opts: &BuildOptions,
    plans: &[LayerPlan<'_>],
    extra_labels: &[(&str, String)],
) -> serde_json::Value {
    let image = traced.image();
    let roles: Vec<Role> = plans.iter().map(|p| p.role).collect();
    let mut config = layers::config(
        &image.config.value,
        &image.config_digest.to_string(),
        opts.user.as_deref(),
        &roles,
        &created_by(opts),
    );
    for (k, v) in extra_labels {
        config["config"]["Labels"][*k] = serde_json::json!(v);
    }
    config
}

/// What the first stage gives the later ones, traced or only opened: the image as read, its
/// config as run, and its merged tree.
pub trait Source {
    fn image(&self) -> &whittle_image::Image;
    fn view(&self) -> &whittle_image::ConfigView;
    fn flat(&self) -> &Flattened;
}

impl Source for Traced {
    fn image(&self) -> &whittle_image::Image {
        &self.image
    }
    fn view(&self) -> &whittle_image::ConfigView {
        &self.view
    }
    fn flat(&self) -> &Flattened {
        &self.fat.flat
    }
}

impl Source for Opened {
    fn image(&self) -> &whittle_image::Image {
        &self.image
    }
    fn view(&self) -> &whittle_image::ConfigView {
        &self.view
    }
    fn flat(&self) -> &Flattened {
        &self.flat
    }
}

impl Traced {
    /// Keeps what later stages read and deletes the extraction (a family holds many
    /// members until it writes them).
    pub fn into_opened(self) -> Opened {
        Opened {
            image: self.image,
            view: self.view,
            before_layers: self.before_layers,
            flat: self.fat.flat,
        }
    }
}

/// The slim image's name: `--tag`, else the destination's, else (for an archive) the
/// source's tagged `-slim`, so `docker load` gives it a name next to the fat image.
pub fn slim_tag(traced: &dyn Source, dest: &ImageRef, opts: &BuildOptions) -> Option<String> {
    opts.tag
        .clone()
        .or_else(|| dest.name.clone())
        .or_else(|| match dest.transport {
            Transport::DockerArchive => traced.image().repo_tags.first().map(|t| slim_name(t)),
            _ => None,
        })
}

/// Stage 4: writes the layers of `plans` and `config` (its diff_ids filled in) to `dest`.
pub fn write(
    dest: Destination,
    plans: &[LayerPlan<'_>],
    config: serde_json::Value,
    tag: Option<String>,
    opts: &BuildOptions,
) -> Result<Written, Error> {
    // Per layer: tar statistics and uncompressed bytes, by position (the writer may
    // compress, and its summary has the stored size).
    let stats = std::sync::Mutex::new(vec![None; plans.len()]);
    let outs: Vec<LayerOut<'_>> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let stats = &stats;
            let p = *p;
            LayerOut::New(Box::new(move |w: &mut dyn std::io::Write| {
                let mut counted = Counting { inner: w, n: 0 };
                let s = write_layer(p.tree, p.store, &mut counted, LayerOptions::default())?;
                stats.lock().expect("not poisoned")[i] = Some((s, counted.n));
                Ok(())
            }))
        })
        .collect();
    let summary = dest
        .write(NewImage {
            config: whittle_image::ImageConfig { value: config },
            layers: outs,
            tag,
            compression: opts.compression.unwrap_or(Compression::None),
        })
        .map_err(|e| interrupted_or(e.into()))?;
    let stats = stats.into_inner().expect("not poisoned");
    let layers = summary
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (st, size) = stats.get(i).copied().flatten().unwrap_or_default();
            LayerReport {
                role: plans[i].role.name(),
                entries: st.entries,
                content_bytes: st.file_bytes,
                size,
                stored_size: Some(l.size),
                diff_id: Some(l.diff_id.to_string()),
                digest: Some(l.digest.to_string()),
            }
        })
        .collect();
    Ok(Written {
        destination: summary.destination,
        config_digest: summary.config_digest.to_string(),
        layers,
    })
}

/// The layers of `plans` as they would be written (uncompressed; with their diff_ids), for
/// a build that is not written and for sizes a family compares against.
pub fn measure(plans: &[LayerPlan<'_>]) -> Result<Vec<LayerReport>, Error> {
    plans
        .iter()
        .map(|p| {
            let mut hashing = whittle_image::HashingWriter::new(std::io::sink());
            let mut counted = Counting {
                inner: &mut hashing,
                n: 0,
            };
            let st = write_layer(p.tree, p.store, &mut counted, LayerOptions::default())?;
            let size = counted.n;
            Ok(LayerReport {
                role: p.role.name(),
                entries: st.entries,
                content_bytes: st.file_bytes,
                size,
                stored_size: None,
                diff_id: Some(hashing.finish().1.to_string()),
                digest: None,
            })
        })
        .collect()
}

/// What the last stage needs besides the traced image and the selection.
struct Finished<'a> {
    dest: &'a ImageRef,
    tag: Option<String>,
    written: Option<Written>,
    verified: Verified,
    notes: Vec<String>,
    debug: Option<debug::DebugReport>,
    treemap: bool,
    timings: BTreeMap<&'static str, u64>,
}

/// Stage 5: the report.
fn report(
    traced: &Traced,
    sel: Selection<'_>,
    parts: &[(Role, FsTree)],
    f: Finished<'_>,
) -> Result<Built, Error> {
    let slim_tree = sel.slim_tree();
    let layer_reports = match &f.written {
        Some(w) => w.layers.clone(),
        None => {
            let plans: Vec<LayerPlan<'_>> = parts
                .iter()
                .map(|(role, tree)| LayerPlan {
                    role: *role,
                    tree,
                    store: sel.store(),
                })
                .collect();
            let mut m = measure(&plans)?;
            // Nothing was written: no digests to give.
            for l in &mut m {
                l.diff_id = None;
            }
            m
        }
    };
    let tree = sel.tree();
    let kept = kept_list(&sel, parts);
    let (dropped, treemap) = dropped_classes(&sel, f.treemap);
    let before: u64 = traced.before_layers.iter().sum();
    let after: u64 = layer_reports.iter().map(|l| l.size).sum();
    let after_content: u64 = slim_tree.iter().map(|(_, n)| n.size()).sum();
    let before_content: u64 = tree.iter().map(|(_, n)| n.size()).sum();
    let before_files = tree.len().saturating_sub(1) as u64;
    drop(sel);
    let Verified {
        status,
        rounds,
        slim_run,
        ..
    } = f.verified;
    let report = BuildReport {
        schema: SCHEMA,
        source: traced.src.to_string(),
        destination: f
            .written
            .as_ref()
            .map_or_else(|| f.dest.to_string(), |w| w.destination.clone()),
        written: f.written.is_some(),
        tag: f.tag,
        source_config_digest: traced.image.config_digest.to_string(),
        config_digest: f.written.as_ref().map(|w| w.config_digest.clone()),
        layers: layer_reports,
        size: Sizes {
            before,
            before_layers: traced.before_layers.clone(),
            after,
            ratio: if after == 0 {
                0.0
            } else {
                before as f64 / after as f64
            },
            before_content,
            after_content,
            before_files,
            after_files: slim_tree.len().saturating_sub(1) as u64,
        },
        kept,
        dropped,
        verification: Verification { status, rounds },
        runs: Runs {
            fat: RunSummary::of(&traced.fat_run),
            slim: slim_run.as_ref().map(RunSummary::of),
        },
        debug: f.debug,
        timings_ms: f.timings,
        notes: f.notes,
    };
    Ok(Built { report, treemap })
}

/// The readiness label `whittle route` reads (`PORT/PATH`, an HTTP GET that must answer 2xx
/// or 3xx). whittle-route spells it too; a test of the CLI crate holds the two together.
pub const PROBE_HTTP_LABEL: &str = "org.whittle.probe.http";

/// Readiness labels from the probes the image was verified with — those asked for, or the
/// default GET / on each exposed port — so a golden image carries its own readiness check
/// (`whittle route` reads them for containers without a HEALTHCHECK). Only an HTTP probe can
/// run from outside the container, and only one that answered 2xx or 3xx can ever pass as
/// readiness (a build compares a 404 and passes); the first such one is the image's check.
pub fn probe_labels(probes: &[whittle_sandbox::ProbeReport]) -> Vec<(&'static str, String)> {
    probes
        .iter()
        .find(|p| p.kind == "http" && p.ok && p.status.is_some_and(|s| (200..400).contains(&s)))
        .map(|p| vec![(PROBE_HTTP_LABEL, p.target.clone())])
        .unwrap_or_default()
}

/// The history entry's `created_by`: the flags that decide the content, never the paths of
/// the source or destination (the same build into another file must give the same digest).
fn created_by(opts: &BuildOptions) -> String {
    use whittle_sandbox::Probe;
    let mut s = String::from("whittle build");
    for p in &opts.run.probes {
        match p {
            Probe::Http { port, path } => s.push_str(&format!(" --http-probe {port}{path}")),
            Probe::Exec(c) => s.push_str(&format!(" --exec-probe {c:?}")),
            Probe::Host(c) => s.push_str(&format!(" --host-probe {c:?}")),
        }
    }
    for (flag, values) in [
        ("--include", &opts.includes),
        ("--include-exe", &opts.include_exes),
        ("--exclude", &opts.excludes),
    ] {
        for v in values {
            s.push_str(&format!(" {flag} {v:?}"));
        }
    }
    if let Some(u) = &opts.user {
        s.push_str(&format!(" --user {u}"));
    }
    s.push_str(&format!(" --layers {}", opts.layers));
    s
}

/// `NAME:TAG` → `NAME:TAG-slim` (`NAME` → `NAME:latest-slim`); a registry port is not a tag.
pub fn slim_name(name: &str) -> String {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    if name[slash..].contains(':') {
        format!("{name}-slim")
    } else {
        format!("{name}:latest-slim")
    }
}

/// `--include` and `--include-exe` name something the image has: checked before the slow
/// part, so a typo costs no trace.
fn check_includes(
    flat: &Flattened,
    view: &whittle_image::ConfigView,
    opts: &BuildOptions,
    src: &ImageRef,
) -> Result<(), Error> {
    let sel = Selection::new(&flat.tree, &flat.store, &[]).map_err(Error::Usage)?;
    for inc in &opts.includes {
        if sel.canonical(inc.as_bytes()).is_none() {
            return Err(Error::Usage(format!(
                "--include {inc}: {src} has no such path"
            )));
        }
    }
    let path = config_of(view).path_var().to_string();
    for exe in &opts.include_exes {
        if sel.which(exe, &path).is_none() {
            return Err(Error::Usage(format!(
                "--include-exe {exe}: no executable of that name in the PATH of {src} ({path})"
            )));
        }
    }
    Ok(())
}

fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// An error that happened because of Ctrl-C is the interrupt.
fn interrupted_or(e: Error) -> Error {
    match whittle_sandbox::interrupted() {
        Some(_) => Error::Interrupted,
        None => e,
    }
}

fn check_interrupt() -> Result<(), Error> {
    match whittle_sandbox::interrupted() {
        Some(_) => Err(Error::Interrupted),
        None => Ok(()),
    }
}

/// Counts the uncompressed bytes of a layer tar on their way to the writer, and stops it on
/// Ctrl-C.
struct Counting<'a> {
    inner: &'a mut dyn std::io::Write,
    n: u64,
}

impl std::io::Write for Counting<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // Ctrl-C while writing: fail the layer, so the destination is never committed.
        if whittle_sandbox::interrupted().is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What the engine needs from the file system to start the container the way the config
/// says: WorkingDir, Volumes, the user database and home, and a world-writable /tmp.
fn keep_config_paths(sel: &mut Selection<'_>, view: &whittle_image::ConfigView) {
    if let Some(wd) = view.working_dir.as_deref().filter(|w| !w.is_empty()) {
        sel.keep_spelled(
            wd,
            Reason::Config {
                field: "WorkingDir",
            },
        );
    }
    for v in view.volumes.iter().flat_map(|m| m.keys()) {
        sel.keep_spelled(v, Reason::Config { field: "Volumes" });
    }
    for f in ["/etc/passwd", "/etc/group"] {
        sel.keep_spelled(f, Reason::Config { field: "User" });
    }
    sel.keep_spelled("/tmp", Reason::Config { field: "tmp" });
}

fn kept_list(sel: &Selection<'_>, parts: &[(Role, whittle_fstree::FsTree)]) -> Vec<KeptPath> {
    sel.kept()
        .iter()
        .filter_map(|(k, reasons)| {
            let n = sel.tree().get(k)?;
            let layer = match parts.first() {
                Some((Role::Base, base)) if base.get(k).is_some() => 1,
                Some((Role::All, _)) => 1,
                _ => 2,
            };
            Some(KeptPath {
                path: display_path(k),
                node: n.kind.name(),
                size: n.size(),
                layer,
                reasons: reasons.iter().cloned().collect(),
            })
        })
        .collect()
}

/// Every regular file of the fat image that the slim image does not keep, by class: the junk
/// classes `inspect` reports, `excluded` for `--exclude`, and `unused` for the rest.
/// With `treemap`, also lists every regular file with its fate.
fn dropped_classes(sel: &Selection<'_>, treemap: bool) -> (Dropped, Vec<html::TreemapFile>) {
    let tree = sel.tree();
    let rules = Rules::new(tree, true, &[]).unwrap_or_else(|_| unreachable!("no globs"));
    let mut by: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut files = Vec::new();
    for (k, n) in tree.iter() {
        if k.is_empty() || n.is_dir() || n.kind == NodeKind::Whiteout {
            continue;
        }
        let kept = sel.is_kept(k);
        let class = if kept {
            "kept"
        } else if sel.is_excluded(k) {
            "excluded"
        } else {
            rules.junk_class(k, n).map_or("unused", |c| c.name())
        };
        if treemap && matches!(n.kind, NodeKind::File { .. }) {
            files.push(html::TreemapFile {
                path: display_path(k),
                size: n.size(),
                kept,
                class: class.to_string(),
            });
        }
        if kept {
            continue;
        }
        let e = by.entry(class).or_default();
        e.0 += 1;
        e.1 += n.size();
    }
    let mut classes: Vec<DroppedClass> = by
        .into_iter()
        .map(|(class, (files, bytes))| DroppedClass {
            class,
            files,
            bytes,
        })
        .collect();
    classes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.class.cmp(b.class)));
    let dropped = Dropped {
        files: classes.iter().map(|c| c.files).sum(),
        bytes: classes.iter().map(|c| c.bytes).sum(),
        classes,
    };
    (dropped, files)
}

/// The HTML page's input: every regular file of the fat image, kept or with its drop class.
pub fn html_page(report: &BuildReport, sel_files: Vec<html::TreemapFile>) -> html::Page {
    let mut summary = vec![
        ("source".to_string(), report.source.clone()),
        ("destination".to_string(), report.destination.clone()),
        (
            "size".to_string(),
            format!(
                "{} → {} ({:.1}x smaller)",
                report::human_bytes(report.size.before),
                report::human_bytes(report.size.after),
                report.size.ratio
            ),
        ),
        (
            "kept".to_string(),
            format!(
                "{} paths, {} of file content",
                report.kept.len(),
                report::human_bytes(report.size.after_content)
            ),
        ),
        (
            "dropped".to_string(),
            format!(
                "{} files, {}",
                report.dropped.files,
                report::human_bytes(report.dropped.bytes)
            ),
        ),
    ];
    for l in &report.layers {
        summary.push((
            format!("layer {}", l.role),
            format!("{} in {} entries", report::human_bytes(l.size), l.entries),
        ));
    }
    let mut notes = vec![format!(
        "verification: {}",
        match report.verification.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    )];
    for r in &report.verification.rounds {
        for d in &r.differences {
            notes.push(format!(
                "round {}: {} {} differs: fat {} / slim {}",
                r.round, d.probe, d.field, d.fat, d.slim
            ));
        }
        for a in &r.added {
            notes.push(format!("round {}: auto-included {a}", r.round));
        }
    }
    html::Page {
        title: format!("whittle build: {}", report.source),
        summary,
        files: sel_files,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(target: &str, status: Option<u16>) -> whittle_sandbox::ProbeReport {
        let mut p = whittle_sandbox::ProbeReport::new("http", target.to_string());
        p.ok = status.is_some();
        p.status = status;
        p
    }

    #[test]
    fn probe_labels_take_the_first_http_probe_that_answered_2xx_or_3xx() {
        let mut exec = whittle_sandbox::ProbeReport::new("exec", "python3 -V".to_string());
        exec.ok = true;
        exec.exit_code = Some(0);
        let probes = [
            exec,
            http("8000/missing", Some(404)),
            http("8001/", None),
            http("8000/health", Some(200)),
            http("8000/moved", Some(301)),
        ];
        assert_eq!(
            probe_labels(&probes),
            vec![("org.whittle.probe.http", "8000/health".to_string())]
        );
        assert_eq!(
            probe_labels(&[http("80/", Some(302))]),
            vec![("org.whittle.probe.http", "80/".to_string())]
        );
        assert!(probe_labels(&probes[..3]).is_empty());
        assert!(probe_labels(&[]).is_empty());
    }

    #[test]
    fn slim_names() {
        assert_eq!(slim_name("nginx:1.25"), "nginx:1.25-slim");
        assert_eq!(slim_name("nginx"), "nginx:latest-slim");
        assert_eq!(slim_name("reg:5000/app"), "reg:5000/app:latest-slim");
        assert_eq!(slim_name("reg:5000/app:v1"), "reg:5000/app:v1-slim");
    }
}
