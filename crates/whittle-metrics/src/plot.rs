//! `whittle metrics plot DIR --html OUT`: one self-contained page of time-series charts per
//! container, from an archive.
//!
//! The charts are inline SVG written here: a line chart is a polyline and a few labels, and the
//! browser lays out the text. (plotters needs a font backend and a system font file to measure
//! text even for SVG output, which a headless server may not have.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::archive::Archive;
use crate::rates::rows;
use crate::top::whittle_units;
use crate::Result;

/// One line of a chart: (seconds since start, value).
type Series = Vec<(f64, f64)>;

#[derive(Default)]
struct ContainerSeries {
    image: String,
    cpu: Series,
    mem: Series,
    rx: Series,
    tx: Series,
    ior: Series,
    iow: Series,
}

/// Renders the page for the whole archive. Frames that cannot be decoded are left out and
/// counted in the page's note.
pub fn html(archive: &Archive, title: &str) -> Result<String> {
    let mut by: BTreeMap<String, ContainerSeries> = BTreeMap::new();
    let mut prev = None;
    let mut skipped = 0usize;
    let t0 = archive.frames.first().map(|f| f.time_ns).unwrap_or(0);
    let t_end = archive.frames.last().map(|f| f.time_ns).unwrap_or(0);
    for i in 0..archive.frames.len() {
        let Ok(snap) = archive.snapshot(i) else {
            skipped += 1;
            prev = None;
            continue;
        };
        let t = snap.time_ns.saturating_sub(t0) as f64 / 1e9;
        for r in rows(prev.as_ref(), &snap) {
            let s = by.entry(r.name.clone()).or_default();
            s.image = r.image.clone();
            let push = |series: &mut Series, v: Option<f64>| {
                if let Some(v) = v {
                    series.push((t, v));
                }
            };
            push(&mut s.cpu, r.cpu_cores);
            push(&mut s.mem, r.memory_working_set_bytes.map(|b| b as f64));
            push(&mut s.rx, r.net_rx_bytes_per_sec);
            push(&mut s.tx, r.net_tx_bytes_per_sec);
            push(&mut s.ior, r.io_read_bytes_per_sec);
            push(&mut s.iow, r.io_write_bytes_per_sec);
        }
        prev = Some(snap);
    }
    let fmt_t = |ns: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns),
        )
        .to_string()
    };
    let mut out = String::new();
    out.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>");
    esc(&mut out, title);
    out.push_str("</title><style>body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
        h2{margin:28px 0 4px}section{display:flex;flex-wrap:wrap;gap:12px}\
        .note{color:#666}svg text{font:11px system-ui,sans-serif;fill:#444}</style></head><body><h1>");
    esc(&mut out, title);
    let _ = write!(
        out,
        "</h1><p class=\"note\">{} frames from {} to {} ({} containers){}</p>",
        archive.frames.len(),
        fmt_t(t0),
        fmt_t(t_end),
        by.len(),
        if skipped > 0 {
            format!("; {skipped} damaged frames left out")
        } else {
            String::new()
        }
    );
    for (name, s) in &by {
        out.push_str("<h2>");
        esc(&mut out, name);
        out.push_str("</h2><p class=\"note\">");
        esc(&mut out, &s.image);
        out.push_str("</p><section>");
        chart(&mut out, "CPU (cores)", &[("cpu", &s.cpu)], |v| {
            format!("{v:.2}")
        });
        chart(
            &mut out,
            "Memory working set",
            &[("working set", &s.mem)],
            whittle_units,
        );
        chart(&mut out, "Network", &[("rx", &s.rx), ("tx", &s.tx)], |v| {
            format!("{}/s", whittle_units(v))
        });
        chart(
            &mut out,
            "Block I/O",
            &[("read", &s.ior), ("write", &s.iow)],
            |v| format!("{}/s", whittle_units(v)),
        );
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

const W: f64 = 520.0;
const H: f64 = 190.0;
const L: f64 = 70.0;
const R: f64 = 10.0;
const T: f64 = 24.0;
const B: f64 = 26.0;
const COLORS: [&str; 2] = ["#1f77b4", "#d62728"];

fn chart(out: &mut String, title: &str, series: &[(&str, &Series)], fmt_y: impl Fn(f64) -> String) {
    let xmax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let ymax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let x = |v: f64| L + v / xmax * (W - L - R);
    let y = |v: f64| H - B - v / ymax * (H - T - B);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#fff\" stroke=\"#ddd\"/>\
         <text x=\"{L}\" y=\"16\" style=\"font-weight:600\">"
    );
    esc(out, title);
    out.push_str("</text>");
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - R,
            y(v),
            y(v),
            L - 4.0,
            y(v) + 4.0,
            fmt_y(v)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{L}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0} s</text>",
        H - 8.0,
        W - R,
        H - 8.0,
        xmax
    );
    for (i, (label, s)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !s.is_empty() {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\""
            );
            for (px, py) in s.iter() {
                let _ = write!(out, "{:.1},{:.1} ", x(*px), y(*py));
            }
            out.push_str("\"/>");
        }
        let lx = W - R - 90.0 * (series.len() - i) as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"17\">",
            lx + 14.0
        );
        esc(out, label);
        if s.is_empty() {
            out.push_str(" (none)");
        }
        out.push_str("</text>");
    }
    out.push_str("</svg>");
}

fn esc(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}
