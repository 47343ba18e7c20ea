//! The tables: each benchmark's ratio, spread and CPU-time ratio, printed as they finish
//! and again at the end.

use std::fmt::Write as _;
use std::sync::Mutex;

use super::{Rounds, Row};

/// Rows of the benchmarks finished so far, for the final tables (and the watchdog's): plain
/// text and markdown.
static FINISHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Adds a finished benchmark's rows (or its failure) to the final tables.
pub fn record(rows: &[Row], result: &Result<Rounds, String>) {
    let mut finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(r) => {
            let note = match r.cut_short {
                0 => String::new(),
                n => format!(" ({n} of {} runs cut short)", 2 * r.cpu_ratio.len()),
            };
            for (row, series) in rows.iter().zip(&r.series) {
                finished.push(rows_of(row, series, median(&r.cpu_ratio), &note));
            }
        }
        Err(e) => {
            for row in rows {
                finished.push((
                    format!("{:<15} FAILED: {e}", row.name),
                    format!("| {} | {} | failed: {e} | | | | | |", row.name, row.unit),
                ));
            }
        }
    }
}

fn rows_of(row: &Row, s: &super::Series, cpu: f64, note: &str) -> (String, String) {
    (
        format!(
            "{:<15} {:>6} {:>11} {:>11} {:>7.2} {:>13} {:>13} {:>6.2}{note}",
            row.name,
            row.unit,
            figure(median(&s.tcp)),
            figure(median(&s.robust)),
            median(&s.ratio),
            format!(
                "{:.2}-{:.2}",
                quantile(&s.ratio, 0.25),
                quantile(&s.ratio, 0.75)
            ),
            format!(
                "{:.2}-{:.2}",
                quantile(&s.ratio, 0.0),
                quantile(&s.ratio, 1.0)
            ),
            cpu,
        ),
        format!(
            "| {}{note} | {} | {} | {} | {:.2}{} | {:.2}–{:.2} | {:.2}–{:.2} | {:.2} |",
            row.name,
            row.unit,
            figure(median(&s.tcp)),
            figure(median(&s.robust)),
            median(&s.ratio),
            if row.is_time { " (time)" } else { "" },
            quantile(&s.ratio, 0.25),
            quantile(&s.ratio, 0.75),
            quantile(&s.ratio, 0.0),
            quantile(&s.ratio, 1.0),
            cpu,
        ),
    )
}

/// Prints the tables of the benchmarks finished so far: plain text, then markdown.
pub fn print_tables() {
    let finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
    println!();
    println!(
        "{:<15} {:>6} {:>11} {:>11} {:>7} {:>13} {:>13} {:>6}",
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

/// A figure with as many decimals as it deserves.
pub fn figure(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The values sorted, two decimals each.
pub fn sorted_list(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut out = String::new();
    for v in &sorted {
        let _ = write!(out, "{v:.2} ");
    }
    out.trim_end().to_string()
}

/// The median (of at least one value).
pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile by linear interpolation between the sorted values (of at least one).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}
