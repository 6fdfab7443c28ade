//! Verification rounds: run the slim tree with the fat run's probes, compare, and on a
//! difference add what the slim run went looking for (auto-include), up to
//! [`AUTO_INCLUDE_ROUNDS`] more times.

use whittle_deps::image::ImageRootFs;
use whittle_deps::{ImageConfig, Request, Resolver};
use whittle_fstree::{display_path, Flattened, FsTree, NodeKind};
use whittle_image::{ConfigView, ImageRef};
use whittle_sandbox::{Outcome, PreparedImage, Report};

use crate::report::{Round, Status};
use crate::select::{Reason, Selection};
use crate::verify::{self, Difference};
use crate::{interrupted_or, outcome_name, BuildOptions, Error, Progress, AUTO_INCLUDE_ROUNDS};

/// What verification found.
#[derive(Debug)]
pub struct Verified {
    pub status: Status,
    pub rounds: Vec<Round>,
    /// The last slim run.
    pub slim_run: Option<Report>,
    /// Fields not compared because the fat image itself answers differently each time.
    pub notes: Vec<String>,
}

impl Verified {
    pub(crate) fn skipped() -> Verified {
        Verified {
            status: Status::Skipped,
            rounds: Vec::new(),
            slim_run: None,
            notes: Vec::new(),
        }
    }
}

/// Everything a round needs besides the selection it changes.
#[allow(missing_debug_implementations)]
pub(crate) struct Verifier<'a, 'p> {
    pub fat: &'a PreparedImage,
    pub fat_run: &'a Report,
    pub opts: &'a BuildOptions,
    pub view: &'a ConfigView,
    pub config: &'a ImageConfig,
    pub src: &'a ImageRef,
    pub dest: &'a ImageRef,
    pub progress: &'a Progress<'p>,
}

/// `(probe, field)` pairs not compared.
type Unstable = Vec<(String, &'static str)>;

impl Verifier<'_, '_> {
    fn tree(&self) -> &FsTree {
        &self.fat.flat.tree
    }

    pub fn run(&self, sel: &mut Selection<'_>) -> Result<Verified, Error> {
        let mut out = Verified {
            status: Status::Failed,
            rounds: Vec::new(),
            slim_run: None,
            notes: Vec::new(),
        };
        let mut unstable: Option<Unstable> = None;
        let mut round = 1u32;
        loop {
            (self.progress.stage)(&format!("verifying the slim image (round {round})"));
            let run = self.run_slim(sel)?;
            let mut differences = verify::compare(self.fat_run, &run);
            if !differences.is_empty() && unstable.is_none() {
                let u = self.unstable_fields()?;
                for (probe, field) in &u {
                    out.notes.push(format!(
                        "{probe} {field} differs between two runs of the fat image: not compared"
                    ));
                }
                unstable = Some(u);
            }
            if let Some(u) = &unstable {
                differences.retain(|d| !is_unstable(u, d));
            }
            let passed = differences.is_empty();
            let missing = if passed {
                Vec::new()
            } else {
                self.missing(&run)
            };
            let added = if !passed && self.opts.auto_include && round <= AUTO_INCLUDE_ROUNDS {
                self.auto_include(sel, &run, &missing, round)
            } else {
                Vec::new()
            };
            let retry = !added.is_empty();
            out.rounds.push(Round {
                round,
                passed,
                differences,
                missing: missing
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect(),
                added,
            });
            out.slim_run = Some(run);
            if passed {
                out.status = Status::Passed;
                return Ok(out);
            }
            if !retry {
                return Ok(out);
            }
            round += 1;
        }
    }

    /// Extracts the current slim tree and runs it with the probes.
    fn run_slim(&self, sel: &Selection<'_>) -> Result<Report, Error> {
        let slim_flat = Flattened {
            tree: sel.slim_tree(),
            store: self.fat.flat.store.clone(),
        };
        let slim = PreparedImage::from_flattened(
            format!("{} (slim)", self.dest),
            self.view.clone(),
            slim_flat,
        )
        .map_err(|e| interrupted_or(e.into()))?;
        let run = whittle_sandbox::run(&slim, &self.opts.run)?;
        if run.outcome == Outcome::Interrupted {
            return Err(Error::Interrupted);
        }
        Ok(run)
    }

    /// Before blaming the slim image: does the fat image give the same answers twice? A page
    /// with a timestamp or a random token never will; then only the fields that stayed the
    /// same can be compared. Only content hashes may vary: a status, exit code or outcome
    /// that changes from run to run leaves nothing to verify against.
    fn unstable_fields(&self) -> Result<Unstable, Error> {
        (self.progress.stage)("running the fat image again (answers differed)");
        let again = whittle_sandbox::run(self.fat, &self.opts.run)?;
        let unstable = |message: String| Error::FatRun {
            image: self.src.to_string(),
            outcome: "unstable".into(),
            message: format!(
                "{message}; verification has nothing stable to compare against \
                 (--no-verify skips it)"
            ),
        };
        match again.outcome {
            Outcome::Ok => {}
            Outcome::Interrupted => return Err(Error::Interrupted),
            o => {
                return Err(unstable(format!(
                    "a second run ended {}: {}",
                    outcome_name(o),
                    again.error.clone().unwrap_or_default()
                )))
            }
        }
        let varying = verify::compare(self.fat_run, &again);
        if let Some(d) = varying.iter().find(|d| !d.field.contains("sha256")) {
            return Err(unstable(format!(
                "{} {} differs between two runs ({} / {})",
                d.probe, d.field, d.fat, d.slim
            )));
        }
        Ok(varying.into_iter().map(|d| (d.probe, d.field)).collect())
    }

    /// What the slim run looked for in vain that the fat image has.
    fn missing(&self, run: &Report) -> Vec<Vec<u8>> {
        let fs = ImageRootFs {
            tree: self.tree(),
            store: &self.fat.flat.store,
        };
        let resolver = Resolver::new(&fs);
        verify::missing(run, self.tree(), |p| {
            resolver.resolve(p, "/", false).is_ok()
        })
    }

    /// Adds what the slim run looked for in vain (or, when it looked for nothing, the
    /// entries of directories both runs listed) with its closure. Returns what was added.
    fn auto_include(
        &self,
        sel: &mut Selection<'_>,
        run: &Report,
        missing: &[Vec<u8>],
        round: u32,
    ) -> Vec<String> {
        let tree = self.tree();
        let mut added = Vec::new();
        for m in missing {
            // Judge the path the image has, however the app spelled it.
            let Some(key) = sel.canonical(m) else {
                continue;
            };
            if sel.is_excluded(&key) || sel.is_kept(&key) {
                continue;
            }
            if sel.keep_raw(m, Reason::AutoInclude { round }) {
                added.push(display_path(&key));
            }
        }
        if added.is_empty() {
            // The answers differ but nothing was looked for in vain: what else the slim run
            // saw differently is a listing with fewer entries (`ls`, a glob, a plugin
            // directory scanned). Only directories both runs listed: the app's own scans.
            let fat_listed = listed_dirs(self.fat_run);
            for dir in listed_dirs(run)
                .into_iter()
                .filter(|d| fat_listed.contains(d))
            {
                let Some(key) = sel.canonical(&dir) else {
                    continue;
                };
                let children: Vec<Vec<u8>> = tree
                    .children(&key)
                    .into_iter()
                    .map(|(k, _)| k.clone())
                    .collect();
                for c in children {
                    if sel.is_excluded(&c) || sel.is_kept(&c) {
                        continue;
                    }
                    if sel.keep(&c, Reason::AutoInclude { round }) {
                        added.push(display_path(&c));
                    }
                }
            }
        }
        // What the added paths need, too (a library's own dependencies).
        let programs: Vec<String> = added
            .iter()
            .filter(|p| {
                tree.get(p.trim_start_matches('/').as_bytes())
                    .is_some_and(|n| {
                        matches!(n.kind, NodeKind::File { .. })
                            && (n.meta.mode & 0o111 != 0 || p.contains(".so"))
                    })
            })
            .cloned()
            .collect();
        if !programs.is_empty() {
            let req = Request {
                config: self.config.clone(),
                paths: programs,
            };
            sel.add_closure(&req, |_| Reason::AutoInclude { round });
        }
        sel.complete();
        added
    }
}

fn is_unstable(u: &Unstable, d: &Difference) -> bool {
    u.iter().any(|(p, f)| *p == d.probe && *f == d.field)
}

/// Directories of the image a run listed (exact path bytes).
fn listed_dirs(run: &Report) -> Vec<Vec<u8>> {
    run.files
        .iter()
        .filter(|f| f.ok && f.in_image && f.node == Some("dir"))
        .filter(|f| f.kinds.contains(&whittle_sandbox::Kind::List))
        .map(|f| f.raw_path.clone())
        .collect()
}
