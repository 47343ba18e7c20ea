//! Runs the selected scenarios side by side, each under a watchdog, and reports in
//! libtest's format (`test <name> ... ok`, `test result: ok. N passed; ...`), which CI
//! counts.
//!
//! Arguments, as libtest takes them: filters (a scenario runs if its name contains any),
//! `--exact`, `--skip <filter>`, `--ignored`, `--include-ignored`, `--list`,
//! `--nocapture` (log lines on stderr as they happen), `--test-threads <n>` (or
//! `RUST_TEST_THREADS`; default 6). Other flags are accepted and ignored.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, Ctx, Shared};
use crate::scenarios::{self, Scenario};
use robust_tcp_testkit::netns;
use robust_tcp_testkit::rng::fresh_seed;

/// Scenarios at once by default: the longest (a 120 s blackhole) then overlaps all the
/// others, and the paced transfers leave the two cores of a CI machine mostly idle.
const DEFAULT_JOBS: usize = 6;
/// How long past its limit a scenario may go before the watchdog kills its peers...
const GRACE: Duration = Duration::from_secs(10);
/// ...and how long after that its thread may take to clean up before it is abandoned (its
/// namespaces are then deleted at exit).
const ABANDON: Duration = Duration::from_secs(30);

/// The command line, libtest's way.
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored_only: bool,
    include_ignored: bool,
    nocapture: bool,
    jobs: usize,
}

impl Args {
    fn parse(args: &[String]) -> Args {
        let mut a = Args {
            filters: Vec::new(),
            skip: Vec::new(),
            exact: false,
            list: false,
            ignored_only: false,
            include_ignored: false,
            nocapture: false,
            jobs: std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_JOBS),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--exact" => a.exact = true,
                "--list" => a.list = true,
                "--ignored" => a.ignored_only = true,
                "--include-ignored" => a.include_ignored = true,
                "--nocapture" | "--no-capture" => a.nocapture = true,
                "--skip" => a.skip.extend(it.next().cloned()),
                "--test-threads" => {
                    a.jobs = it.next().and_then(|n| n.parse().ok()).unwrap_or(a.jobs);
                }
                s if s.starts_with("--test-threads=") => {
                    a.jobs = s["--test-threads=".len()..].parse().unwrap_or(a.jobs);
                }
                // libtest flags that change nothing here (--quiet, --color, --format...):
                // accepted, so that `cargo test -- <flags>` for the whole suite works.
                s if s.starts_with('-') => {}
                s => a.filters.push(s.to_string()),
            }
        }
        a.jobs = a.jobs.max(1);
        a
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(|f| name.contains(f.as_str()))
    }
}

/// What became of one scenario.
enum Outcome {
    Passed,
    Failed(String),
    Ignored(String),
}

/// Runs the scenarios the arguments select; returns the process's exit status (0, or 101
/// when one failed, as libtest).
pub fn run(raw: &[String]) -> i32 {
    let args = Args::parse(raw);
    let all = scenarios::all();
    let total = all.len();
    // With --ignored only the ignored run, and the others count as filtered out, as in
    // libtest.
    let selected: Vec<Scenario> = all
        .into_iter()
        .filter(|s| args.selects(s.name) && (!args.ignored_only || s.ignored.is_some()))
        .collect();
    let filtered_out = total - selected.len();
    if args.list {
        for s in &selected {
            println!("{}: test", s.name);
        }
        println!("\n{} tests, 0 benchmarks", selected.len());
        return 0;
    }
    let started = Instant::now();
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let (to_run, ignored): (Vec<Scenario>, Vec<Scenario>) =
        selected.into_iter().partition(|s| match s.ignored {
            None => !args.ignored_only,
            Some(_) => args.ignored_only || args.include_ignored,
        });
    let mut results: Vec<(&'static str, Outcome)> = ignored
        .iter()
        .map(|s| {
            let why = s.ignored.unwrap_or("not selected without --ignored");
            (s.name, Outcome::Ignored(why.to_string()))
        })
        .collect();
    for (name, outcome) in &results {
        report(name, outcome, None, &[]);
    }

    if !to_run.is_empty() {
        if let Some(why) = netns::missing_prerequisites() {
            if std::env::var_os("CI").is_some() {
                let why = format!(
                    "the namespace tests cannot run: {why}; CI is set, so this is a failure \
                     (.ci/run installs iproute2, iptables and conntrack, and runs as root)"
                );
                for s in &to_run {
                    let outcome = Outcome::Failed(why.clone());
                    report(s.name, &outcome, None, &[]);
                    results.push((s.name, outcome));
                }
            } else {
                eprintln!("netns: skipped: {why}");
                for s in &to_run {
                    let outcome = Outcome::Ignored(format!("skipped: {why}"));
                    report(s.name, &outcome, None, &[]);
                    results.push((s.name, outcome));
                }
            }
            return summary(&results, &[], filtered_out, started);
        }
        match netns::remove_stale() {
            Ok(stale) if !stale.is_empty() => {
                eprintln!("netns: removed namespaces of earlier runs that were killed: {stale:?}");
            }
            Ok(_) => {}
            Err(e) => eprintln!("netns: cannot list namespaces: {e}"),
        }
        netns::on_signal(harness::kill_all_peers);
    }

    let mut logs = Vec::new();
    run_all(to_run, &args, &mut results, &mut logs);
    // Anything a scenario abandoned by the watchdog left behind.
    netns::remove_live();
    summary(&results, &logs, filtered_out, started)
}

/// Runs `to_run`, `args.jobs` at a time, longest first, each under its watchdog.
fn run_all(
    to_run: Vec<Scenario>,
    args: &Args,
    results: &mut Vec<(&'static str, Outcome)>,
    logs: &mut Vec<(&'static str, Vec<String>)>,
) {
    struct Running {
        shared: Arc<Shared>,
        limit: Duration,
        killed: bool,
    }
    let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut waiting = to_run.into_iter().enumerate().collect::<Vec<_>>();
    waiting.reverse();
    let mut running: Vec<(usize, Running)> = Vec::new();
    while !waiting.is_empty() || !running.is_empty() {
        while running.len() < args.jobs {
            let Some((index, scenario)) = waiting.pop() else {
                break;
            };
            let shared = Shared::new(scenario.name, args.nocapture);
            let seed = fresh_seed();
            let tx = tx.clone();
            let for_thread = Arc::clone(&shared);
            let (body, limit) = (scenario.run, scenario.limit);
            thread::Builder::new()
                .name(scenario.name.into())
                .spawn(move || {
                    let ctx = Ctx::new(for_thread, limit, seed);
                    ctx.figure("seed", seed.to_string());
                    let result = panic::catch_unwind(AssertUnwindSafe(|| body(&ctx)))
                        .unwrap_or_else(|payload| {
                            Err(format!("panicked: {}", panic_text(&*payload)))
                        });
                    let _ = tx.send((index, result));
                })
                .expect("spawn a scenario thread");
            running.push((
                index,
                Running {
                    shared,
                    limit,
                    killed: false,
                },
            ));
        }
        let next_check = running
            .iter()
            .map(|(_, r)| {
                let due = r.limit + if r.killed { GRACE + ABANDON } else { GRACE };
                (r.shared.start + due).saturating_duration_since(Instant::now())
            })
            .min()
            .unwrap_or(Duration::ZERO);
        match rx.recv_timeout(next_check) {
            Ok((index, result)) => {
                let Some(pos) = running.iter().position(|(i, _)| *i == index) else {
                    continue;
                };
                let (_, r) = running.remove(pos);
                let outcome = settle(&r.shared, result, r.killed.then_some(r.limit));
                finish(&r.shared, outcome, results, logs);
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let mut abandoned = Vec::new();
                for (pos, (_, r)) in running.iter_mut().enumerate() {
                    if !r.killed && now >= r.shared.start + r.limit + GRACE {
                        r.shared.log(&format!(
                            "watchdog: over its limit of {:?}; killing its peers",
                            r.limit
                        ));
                        r.shared.kill_peers();
                        r.killed = true;
                    } else if r.killed && now >= r.shared.start + r.limit + GRACE + ABANDON {
                        abandoned.push(pos);
                    }
                }
                for pos in abandoned.into_iter().rev() {
                    let (_, r) = running.remove(pos);
                    let why = format!(
                        "watchdog: did not finish within its limit of {:?}, and its thread did \
                         not return after its peers were killed",
                        r.limit
                    );
                    finish(&r.shared, Outcome::Failed(why), results, logs);
                }
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the runner holds a sender"),
        }
    }
}

/// The outcome of a scenario from its result and the requirements it found violated.
fn settle(shared: &Shared, result: Result<(), String>, watchdog: Option<Duration>) -> Outcome {
    let mut problems = shared.failed();
    if let Err(e) = result {
        problems.push(e);
    }
    if let Some(limit) = watchdog {
        problems.insert(
            0,
            format!("watchdog: did not finish within its limit of {limit:?}"),
        );
    }
    if problems.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(problems.join("\n"))
    }
}

/// Reports a finished scenario and keeps its outcome, and its log if it failed.
fn finish(
    shared: &Shared,
    outcome: Outcome,
    results: &mut Vec<(&'static str, Outcome)>,
    logs: &mut Vec<(&'static str, Vec<String>)>,
) {
    let elapsed = shared.start.elapsed();
    report(shared.name, &outcome, Some(elapsed), &shared.figures());
    if let Outcome::Failed(why) = &outcome {
        let mut log = shared.log_lines();
        log.push(String::new());
        log.extend(why.lines().map(|l| format!("FAILED: {l}")));
        logs.push((shared.name, log));
    }
    results.push((shared.name, outcome));
}

/// Prints one scenario's line, as libtest does with `--report-time`, and its figures.
fn report(name: &str, outcome: &Outcome, elapsed: Option<Duration>, figures: &[(String, String)]) {
    let time = elapsed.map_or(String::new(), |d| format!(" <{:.3}s>", d.as_secs_f64()));
    let mut out = match outcome {
        Outcome::Passed => format!("test {name} ... ok{time}"),
        Outcome::Failed(_) => format!("test {name} ... FAILED{time}"),
        Outcome::Ignored(why) => format!("test {name} ... ignored, {why}"),
    };
    for (what, value) in figures {
        out.push_str(&format!("\n    {name}: {what}: {value}"));
    }
    if let Outcome::Failed(why) = outcome {
        for line in why.lines() {
            out.push_str(&format!("\n    {name}: FAILED: {line}"));
        }
    }
    println!("{out}");
}

/// Prints the failures' logs and the summary line; returns the exit status.
fn summary(
    results: &[(&'static str, Outcome)],
    logs: &[(&'static str, Vec<String>)],
    filtered_out: usize,
    started: Instant,
) -> i32 {
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
    let passed = count(|o| matches!(o, Outcome::Passed));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let ignored = count(|o| matches!(o, Outcome::Ignored(_)));
    if failed > 0 {
        println!("\nfailures:\n");
        for (name, log) in logs {
            println!("---- {name} log ----");
            for line in log {
                println!("{line}");
            }
            println!();
        }
        println!("failures:");
        for (name, _) in results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        {
            println!("    {name}");
        }
    }
    let verdict = if failed > 0 { "FAILED" } else { "ok" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; \
         {filtered_out} filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        101
    } else {
        0
    }
}

/// The message of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic)".into())
}
