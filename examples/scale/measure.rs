//! What the parent measures of a child process, from `/proc`: memory, threads, CPU time.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::process::Command;

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) rss_kib: u64,
    pub(super) threads: u64,
    pub(super) fds: u64,
    pub(super) cpu_ticks: u64,
}

pub(super) fn sample(pid: u32) -> io::Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let fields: HashMap<&str, &str> = status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let number = |key: &str| -> io::Result<u64> {
        fields
            .get(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its
    // closing parenthesis start with field 3, so utime (14) and stime (15) are 11 and 12.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other(format!("malformed /proc/{pid}/stat")))?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<u64> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| io::Error::other(format!("malformed /proc/{pid}/stat")))
    };
    Ok(Sample {
        rss_kib: number("VmRSS")?,
        threads: number("Threads")?,
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        cpu_ticks: tick(11)? + tick(12)?,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat`; asked of `getconf` once, since reading
/// `sysconf` directly would need `unsafe`. 100 on every common Linux.
pub(super) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

pub(super) fn field(words: &[String], i: usize, what: &str) -> io::Result<f64> {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| io::Error::other(format!("malformed '{what}' line: {words:?}")))
}
