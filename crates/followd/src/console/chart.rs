//! Charts as SVG drawn on the server: no script, nothing to download, inert by construction (every
//! value drawn is a number we computed).

use followd_graph::outbox::Outcome;
use followd_webhook::recent::{MinuteLatency, Snapshot};
use maud::{html, Markup};
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 180.0;
const PAD_L: f64 = 48.0;
const PAD_B: f64 = 22.0;
/// Seconds per point of the deliveries chart (360 points over the hour).
pub const BIN_SECS: usize = 10;

/// The polyline of `ys` (drawn left to right over the plot area), scaled to `max`.
fn line(ys: &[f64], max: f64) -> String {
    let n = ys.len().max(2) - 1;
    let mut s = String::with_capacity(ys.len() * 12);
    for (i, y) in ys.iter().enumerate() {
        let x = PAD_L + (W - PAD_L - 4.0) * i as f64 / n as f64;
        let y = 6.0 + (H - PAD_B - 6.0) * (1.0 - (y / max).min(1.0));
        let _ = write!(s, "{x:.1},{y:.1} ");
    }
    s
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn frame(max: f64, unit: &str, left: &str, body: Markup) -> Markup {
    // Five steps of a 1-2-5 maximum are round numbers.
    let grid: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let v = max * i as f64 / 5.0;
            let y = 6.0 + (H - PAD_B - 6.0) * (1.0 - i as f64 / 5.0);
            let text = format!("{v:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            (y, format!("{text}{unit}"))
        })
        .collect();
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" xmlns="http://www.w3.org/2000/svg" {
            @for (y, label) in &grid {
                line.grid x1=(PAD_L) x2=(W - 4.0) y1=(format!("{y:.1}")) y2=(format!("{y:.1}")) {}
                text.axis x=(PAD_L - 6.0) y=(format!("{:.1}", y + 4.0)) text-anchor="end" { (label) }
            }
            text.axis x=(PAD_L) y=(H - 6.0) { (left) }
            text.axis x=(W - 4.0) y=(H - 6.0) text-anchor="end" { "now" }
            (body)
        }
    }
}

/// Deliveries per second over the last hour, one line per outcome that happened.
pub fn deliveries(s: &Snapshot) -> Markup {
    let bins = s.per_sec.len() / BIN_SECS;
    let series: Vec<(Outcome, Vec<f64>)> = Outcome::ALL
        .iter()
        .enumerate()
        .map(|(k, &o)| {
            let ys = (0..bins)
                .map(|b| s.per_sec[b * BIN_SECS..(b + 1) * BIN_SECS].iter().map(|r| r[k] as f64).sum::<f64>() / BIN_SECS as f64)
                .collect();
            (o, ys)
        })
        .collect();
    let totals: Vec<u64> = (0..Outcome::ALL.len()).map(|k| s.per_sec.iter().map(|r| r[k] as u64).sum()).collect();
    let max = nice_max(series.iter().flat_map(|(_, ys)| ys.iter().copied()).fold(0.0, f64::max));
    html! {
        (frame(max, "/s", "−60 min", html! {
            @for (k, (o, ys)) in series.iter().enumerate() {
                @if totals[k] > 0 {
                    polyline class=(format!("series o-{}", o.as_str())) points=(line(ys, max)) {}
                }
            }
        }))
        ul.legend {
            @for (k, o) in Outcome::ALL.iter().enumerate() {
                li { span class=(format!("swatch o-{}", o.as_str())) {} (o.as_str()) " " strong { (totals[k]) } }
            }
        }
    }
}

/// Attempt latency p50 and p99 per minute over the last hour, in ms.
pub fn latency(m: &[MinuteLatency]) -> Markup {
    let p50: Vec<f64> = m.iter().map(|x| x.p50_us as f64 / 1000.0).collect();
    let p99: Vec<f64> = m.iter().map(|x| x.p99_us as f64 / 1000.0).collect();
    let max = nice_max(p99.iter().copied().fold(0.0, f64::max));
    let any = m.iter().any(|x| x.count > 0);
    html! {
        (frame(max, " ms", "−60 min", html! {
            @if any {
                polyline.series.p50 points=(line(&p50, max)) {}
                polyline.series.p99 points=(line(&p99, max)) {}
            }
        }))
        ul.legend {
            li { span.swatch.p50 {} "p50" }
            li { span.swatch.p99 {} "p99" }
            li { "(bucket upper bounds; " (m.iter().map(|x| x.count).sum::<u64>()) " attempts)" }
        }
    }
}
