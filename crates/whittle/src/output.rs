//! Terminal conventions shared by every command: progress only on a terminal, `NO_COLOR`
//! honoured, one-line errors, human-readable sizes.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
pub use whittle_image::units::human_bytes;

/// A byte counter on stderr when it is a terminal; a hidden no-op bar otherwise.
pub fn byte_progress(message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let template = if no_color() {
        "{msg} {bytes} ({binary_bytes_per_sec}) {elapsed}"
    } else {
        "{spinner:.cyan} {msg} {bytes} ({binary_bytes_per_sec}) {elapsed}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Prints an error as one line: the chain of causes joined, never a backtrace.
#[allow(clippy::print_stderr)]
pub fn error_line(e: &anyhow::Error) {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    eprintln!("whittle: error: {}", one_line(&msg));
}

/// Error text can quote bytes from a hostile file (tar parsers echo bad header fields): keep
/// it on one line and of a readable length.
pub fn one_line(msg: &str) -> String {
    const MAX: usize = 400;
    let mut out = String::new();
    for c in msg.chars() {
        if out.len() >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `value` as pretty JSON on stdout. A reader that went away (`--json | head`) is not
/// an error: SIGPIPE is ignored (the long-running commands need EPIPE on their sockets), so
/// `println!` would panic there.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs `f` with a build's progress: the stage as the bar's message, bytes read as its count;
/// the bar is cleared before the result is returned.
pub fn with_build_progress<T>(
    message: &str,
    f: impl FnOnce(&whittle_build::Progress<'_>) -> T,
) -> T {
    let bar = byte_progress(message);
    let stage = |s: &str| {
        bar.set_message(s.to_string());
        bar.set_position(0);
    };
    let tick = |n: u64| bar.inc(n);
    let progress = whittle_build::Progress {
        stage: &stage,
        bytes: Some(&tick),
    };
    let out = f(&progress);
    bar.finish_and_clear();
    out
}
