//! `whittle top`: the live terminal view of containers, and the same view scrolling through an
//! archive.

use std::path::Path;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TRow, Table, TableState};
use ratatui::{DefaultTerminal, Frame};
use whittle_engine::procfs::ProcRoot;
use whittle_engine::watch::Watcher;
use whittle_engine::Engine;

use crate::archive::Archive;
use crate::rates::{rows, sort, Row, SortKey};
use crate::{Collector, Error, Result, Snapshot};

/// Where the view's snapshots come from.
enum Source {
    Live {
        // Kept alive for the watcher's task.
        _rt: Box<tokio::runtime::Runtime>,
        watcher: Watcher,
        collector: Box<Collector>,
        interval: Duration,
    },
    Archive {
        archive: Archive,
        name: String,
        frame: usize,
    },
}

struct View {
    source: Source,
    prev: Option<Snapshot>,
    cur: Snapshot,
    sort: SortKey,
    table: TableState,
    show_processes: bool,
    paused: bool,
    color: bool,
}

/// Runs the live view until `q`.
pub fn live(host: Option<&str>, interval: Duration, sort: SortKey, color: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the I/O runtime: {e}")))?;
    let engine = rt.block_on(Engine::connect_negotiated(host))?;
    let mut watcher = {
        let _g = rt.enter();
        Watcher::spawn(engine, ProcRoot::real(), true, |_| {})
    };
    rt.block_on(watcher.synced());
    let mut collector = Collector::new(ProcRoot::real())?;
    collector.processes = true;
    let mut view = View::new(
        Source::Live {
            _rt: Box::new(rt),
            watcher,
            collector: Box::new(collector),
            interval,
        },
        sort,
        color,
    );
    view.step(1)?;
    run_terminal(view)
}

/// Runs the view over an archive, starting at its first frame.
pub fn archive(dir: &Path, sort: SortKey, color: bool) -> Result<()> {
    let archive = Archive::open(dir)?;
    let first = (0..archive.frames.len()).find(|&i| archive.snapshot(i).is_ok());
    if first.is_none() {
        return Err(Error::Archive {
            path: dir.display().to_string(),
            cause: "no readable frames".into(),
        });
    }
    let view = View::new(
        Source::Archive {
            archive,
            name: dir.display().to_string(),
            frame: first.unwrap_or(0),
        },
        sort,
        color,
    );
    run_terminal(view)
}

fn run_terminal(mut view: View) -> Result<()> {
    view.load()?;
    let mut terminal = ratatui::try_init().map_err(|e| Error::Usage(format!("terminal: {e}")))?;
    let r = event_loop(&mut terminal, &mut view);
    ratatui::restore();
    r
}

impl View {
    fn new(source: Source, sort: SortKey, color: bool) -> Self {
        Self {
            source,
            prev: None,
            cur: Snapshot::default(),
            sort,
            table: TableState::default().with_selected(Some(0)),
            show_processes: false,
            paused: false,
            color,
        }
    }

    /// Loads the current frame (archive) or takes a first sample (live).
    fn load(&mut self) -> Result<()> {
        match &mut self.source {
            Source::Live { .. } => Ok(()),
            Source::Archive { archive, frame, .. } => {
                self.cur = archive.snapshot(*frame)?;
                self.prev = match frame.checked_sub(1) {
                    Some(p) => archive.snapshot(p).ok(),
                    None => None,
                };
                Ok(())
            }
        }
    }

    /// Moves `delta` frames (archive) or takes a new sample (live).
    fn step(&mut self, delta: i64) -> Result<()> {
        match &mut self.source {
            Source::Live {
                watcher, collector, ..
            } => {
                let inv = watcher.current();
                let list: Vec<_> = inv.containers.values().collect();
                let next = collector.collect(&list);
                self.prev = Some(std::mem::replace(&mut self.cur, next));
                Ok(())
            }
            Source::Archive { archive, frame, .. } => {
                // Frames that cannot be decoded (a damaged key frame) are stepped over.
                let last = archive.frames.len() as i64 - 1;
                let was = *frame;
                let mut at = (*frame as i64 + delta).clamp(0, last.max(0));
                let dir = if delta < 0 { -1 } else { 1 };
                while (0..=last).contains(&at) && archive.snapshot(at as usize).is_err() {
                    at += dir;
                }
                if !(0..=last).contains(&at) {
                    at = was as i64;
                }
                *frame = at as usize;
                self.load()
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        let mut r = rows(self.prev.as_ref(), &self.cur);
        sort(&mut r, self.sort);
        r
    }
}

fn event_loop(terminal: &mut DefaultTerminal, view: &mut View) -> Result<()> {
    let mut last = Instant::now();
    loop {
        terminal
            .draw(|f| draw(f, view))
            .map_err(|e| Error::Usage(format!("terminal: {e}")))?;
        let interval = match &view.source {
            Source::Live { interval, .. } => *interval,
            Source::Archive { .. } => Duration::from_secs(3600),
        };
        let wait = interval.saturating_sub(last.elapsed());
        if event::poll(wait).map_err(|e| Error::Usage(format!("terminal: {e}")))? {
            if let Event::Key(k) =
                event::read().map_err(|e| Error::Usage(format!("terminal: {e}")))?
            {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                let n = view.cur.containers.len();
                let sel = view.table.selected().unwrap_or(0);
                let ctrl = k
                    .modifiers
                    .contains(crossterm::event::KeyModifiers::CONTROL);
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    // Raw mode delivers Ctrl-C as a key, not as SIGINT.
                    KeyCode::Char('c') if ctrl => return Ok(()),
                    KeyCode::Char('c') => view.sort = SortKey::Cpu,
                    KeyCode::Char('m') => view.sort = SortKey::Memory,
                    KeyCode::Char('n') => view.sort = SortKey::Name,
                    KeyCode::Char('t') => view.sort = SortKey::Net,
                    KeyCode::Char('i') => view.sort = SortKey::Io,
                    KeyCode::Char('p') => view.sort = SortKey::Pids,
                    KeyCode::Char(' ') => view.paused = !view.paused,
                    KeyCode::Enter => view.show_processes = !view.show_processes,
                    KeyCode::Down => view.table.select(Some((sel + 1).min(n.saturating_sub(1)))),
                    KeyCode::Up => view.table.select(Some(sel.saturating_sub(1))),
                    KeyCode::Right => view.step(1)?,
                    KeyCode::Left => view.step(-1)?,
                    KeyCode::PageDown => view.step(60)?,
                    KeyCode::PageUp => view.step(-60)?,
                    _ => {}
                }
            }
        }
        if matches!(view.source, Source::Live { .. }) && last.elapsed() >= interval {
            if !view.paused {
                view.step(1)?;
            }
            last = Instant::now();
        }
    }
}

fn fmt_bytes(b: Option<u64>) -> String {
    b.map(|b| whittle_units(b as f64))
        .unwrap_or_else(|| "-".into())
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map(|r| format!("{}/s", whittle_units(r)))
        .unwrap_or_else(|| "-".into())
}

/// 1024-based sizes with one decimal, short enough for a table cell.
pub(crate) fn whittle_units(v: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn draw(f: &mut Frame, view: &mut View) {
    let rows = view.rows();
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_nanos(view.cur.time_ns),
    );
    let mode = match &view.source {
        Source::Live { interval, .. } => format!(
            "live, every {:?}{}",
            interval,
            if view.paused { " (paused)" } else { "" }
        ),
        Source::Archive {
            archive,
            name,
            frame,
        } => format!(
            "archive {name}, frame {}/{} (←/→ one, PgUp/PgDn sixty)",
            frame + 1,
            archive.frames.len()
        ),
    };
    let title = format!(
        " whittle top — {} containers — {when} — {mode} — sort {:?} ",
        rows.len(),
        view.sort
    );
    let help = "c cpu  m mem  n name  t net  i io  p pids  ↑↓ select  Enter processes  space pause  q quit";
    let areas = if view.show_processes {
        Layout::vertical([
            Constraint::Percentage(55),
            Constraint::Percentage(45),
            Constraint::Length(1),
        ])
        .split(f.area())
    } else {
        Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(0),
            Constraint::Length(1),
        ])
        .split(f.area())
    };
    let header = [
        "NAME",
        "CPU",
        "LIMIT",
        "THR%",
        "MEM",
        "MEM LIMIT",
        "NET RX",
        "NET TX",
        "IO R",
        "IO W",
        "PIDS",
        "HEALTH",
    ];
    let head_style = if view.color {
        Style::default().add_modifier(Modifier::BOLD).cyan()
    } else {
        Style::default().add_modifier(Modifier::BOLD)
    };
    let body: Vec<TRow> = rows
        .iter()
        .map(|r| {
            let net = |v: Option<f64>| match r.netns {
                "host" => "host".to_string(),
                "shared" if v.is_none() => "shared".to_string(),
                _ => fmt_rate(v),
            };
            TRow::new(vec![
                Cell::from(r.name.clone()),
                Cell::from(
                    r.cpu_cores
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(
                    r.cpu_limit_cores
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(
                    r.throttled_percent
                        .map(|t| format!("{t:.0}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(fmt_bytes(r.memory_working_set_bytes)),
                Cell::from(fmt_bytes(r.memory_limit_bytes)),
                Cell::from(net(r.net_rx_bytes_per_sec)),
                Cell::from(net(r.net_tx_bytes_per_sec)),
                Cell::from(fmt_rate(r.io_read_bytes_per_sec)),
                Cell::from(fmt_rate(r.io_write_bytes_per_sec)),
                Cell::from(r.pids.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
                Cell::from(r.health.clone().unwrap_or_else(|| "-".into())),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(16),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(9),
    ];
    let sel_style = Style::default().add_modifier(Modifier::REVERSED);
    let table = Table::new(body, widths)
        .header(TRow::new(header.to_vec()).style(head_style))
        .row_highlight_style(sel_style)
        .block(Block::default().borders(Borders::ALL).title(title));
    f.render_stateful_widget(table, areas[0], &mut view.table);

    if view.show_processes {
        let sel = view.table.selected().unwrap_or(0);
        let block = Block::default().borders(Borders::ALL);
        match rows.get(sel) {
            Some(r) if !r.processes.is_empty() => {
                let body: Vec<TRow> = r
                    .processes
                    .iter()
                    .map(|p| {
                        TRow::new(vec![
                            p.pid.to_string(),
                            p.ns_pid.to_string(),
                            p.uid.to_string(),
                            p.state.clone(),
                            p.cpu_percent
                                .map(|c| format!("{c:.1}"))
                                .unwrap_or_else(|| "-".into()),
                            whittle_units(p.rss_bytes as f64),
                            p.threads.to_string(),
                            if p.cmdline.is_empty() {
                                format!("[{}]", p.comm)
                            } else {
                                p.cmdline.clone()
                            },
                        ])
                    })
                    .collect();
                let t = Table::new(
                    body,
                    [
                        Constraint::Length(8),
                        Constraint::Length(6),
                        Constraint::Length(6),
                        Constraint::Length(2),
                        Constraint::Length(6),
                        Constraint::Length(10),
                        Constraint::Length(4),
                        Constraint::Min(10),
                    ],
                )
                .header(
                    TRow::new(vec![
                        "PID", "NSPID", "UID", "S", "CPU%", "RSS", "THR", "COMMAND",
                    ])
                    .style(head_style),
                )
                .block(block.title(format!(" processes of {} (pid namespace view) ", r.name)));
                f.render_widget(t, areas[1]);
            }
            Some(r) => {
                let why = match view.source {
                    Source::Archive { .. } => "processes are not archived; the live view has them",
                    Source::Live { .. } => "no processes read yet",
                };
                f.render_widget(
                    Paragraph::new(why).block(block.title(format!(" {} ", r.name))),
                    areas[1],
                );
            }
            None => {}
        }
    }
    f.render_widget(Paragraph::new(Line::from(help)), areas[2]);
}
