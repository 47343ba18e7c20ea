//! The tables: each benchmark's ratio, spread and CPU-time ratio, printed as they finish
//! and again at the end.

use std::fmt::Write as _;
use std::sync::Mutex;

use super::{Rounds, Summary, SOFT_LIMIT};

/// The two table rows of a finished benchmark: plain text and markdown.
pub(super) fn rows(s: &Summary) -> (String, String) {
    match &s.result {
        Ok(r) => {
            let note = match r.cut_short {
                0 => String::new(),
                n => format!(
                    " ({n} of {} runs cut short at {SOFT_LIMIT:?})",
                    2 * r.ratio.len()
                ),
            };
            rows_of(s, r, &note)
        }
        Err(e) => (
            format!("{:<11} FAILED: {e}", s.name),
            format!("| {} | {} | failed: {e} | | | | | |", s.name, s.kind.unit()),
        ),
    }
}

pub(super) fn rows_of(s: &Summary, r: &Rounds, note: &str) -> (String, String) {
    (
        format!(
            "{:<11} {:>6} {:>11} {:>11} {:>7.2} {:>13} {:>13} {:>6.2}{note}",
            s.name,
            s.kind.unit(),
            figure(median(&r.tcp)),
            figure(median(&r.robust)),
            median(&r.ratio),
            format!(
                "{:.2}-{:.2}",
                quantile(&r.ratio, 0.25),
                quantile(&r.ratio, 0.75)
            ),
            format!(
                "{:.2}-{:.2}",
                quantile(&r.ratio, 0.0),
                quantile(&r.ratio, 1.0)
            ),
            median(&r.cpu_ratio),
        ),
        format!(
            "| {}{note} | {} | {} | {} | {:.2}{} | {:.2}–{:.2} | {:.2}–{:.2} | {:.2} |",
            s.name,
            s.kind.unit(),
            figure(median(&r.tcp)),
            figure(median(&r.robust)),
            median(&r.ratio),
            if s.kind.is_time() { " (time)" } else { "" },
            quantile(&r.ratio, 0.25),
            quantile(&r.ratio, 0.75),
            quantile(&r.ratio, 0.0),
            quantile(&r.ratio, 1.0),
            median(&r.cpu_ratio),
        ),
    )
}

/// Rows of the benchmarks finished so far, for the final tables (and the watchdog's).
pub(super) static FINISHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

pub(super) fn print_tables() {
    let finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
    println!();
    println!(
        "{:<11} {:>6} {:>11} {:>11} {:>7} {:>13} {:>13} {:>6}",
        "bench", "unit", "TCP", "robust", "ratio", "p25-p75", "min-max", "cpu"
    );
    for (text, _) in finished.iter() {
        println!("{text}");
    }
    println!();
    println!(
        "| bench | unit | TCP (median) | robust (median) | ratio robust/TCP (median) | \
         ratio p25–p75 | ratio min–max | CPU ratio robust/TCP (median) |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    for (_, markdown) in finished.iter() {
        println!("{markdown}");
    }
}

pub(super) fn figure(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub(super) fn sorted_list(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut out = String::new();
    for v in &sorted {
        let _ = write!(out, "{v:.2} ");
    }
    out.trim_end().to_string()
}

pub(super) fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile by linear interpolation between the sorted values.
pub(super) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}
