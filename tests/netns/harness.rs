//! The harness side of a scenario: its context (log, figures, failed requirements, time
//! limit, namespaces) and the peer processes it runs in namespaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::events::Event;
use robust_tcp_testkit::netns::{self, Topology};

/// Process ids of every live peer of this run, for the signal handler (which cannot rely
/// on drops).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A scenario's failure: what went wrong, in words.
pub type Failure = String;

/// What the runner and the scenario's thread share: it outlives the thread if the
/// watchdog gives up on it.
pub struct Shared {
    /// The scenario's name.
    pub name: &'static str,
    /// When it started.
    pub start: Instant,
    /// Log lines (harness steps and everything the peers print), stamped from `start`.
    log: Mutex<Vec<String>>,
    /// Measured figures, in the order they were taken: `(what, value)`.
    figures: Mutex<Vec<(String, String)>>,
    /// Requirements the scenario found violated while it went on.
    failed: Mutex<Vec<String>>,
    /// Its live peers' process ids, for the watchdog.
    pids: Mutex<Vec<u32>>,
    /// Echo log lines to stderr as they come (`--nocapture`).
    echo: bool,
}

impl Shared {
    /// A fresh record for scenario `name`.
    pub fn new(name: &'static str, echo: bool) -> Arc<Shared> {
        Arc::new(Shared {
            name,
            start: Instant::now(),
            log: Mutex::new(Vec::new()),
            figures: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
            echo,
        })
    }

    /// Adds a line to the log.
    pub fn log(&self, line: &str) {
        let stamped = format!("[{:8.3}] {line}", self.start.elapsed().as_secs_f64());
        if self.echo {
            eprintln!("{}: {stamped}", self.name);
        }
        lock(&self.log).push(stamped);
    }

    /// The log so far.
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// The figures so far.
    pub fn figures(&self) -> Vec<(String, String)> {
        lock(&self.figures).clone()
    }

    /// The violated requirements so far.
    pub fn failed(&self) -> Vec<String> {
        lock(&self.failed).clone()
    }

    /// Kills every live peer of the scenario (the watchdog's move: the scenario's waits
    /// then fail at once, and its drops clean up).
    pub fn kill_peers(&self) {
        for pid in lock(&self.pids).iter() {
            kill(*pid);
        }
    }
}

/// Kills every live peer of the run (for the signal handler).
pub fn kill_all_peers() {
    for pid in lock(&CHILDREN).iter() {
        kill(*pid);
    }
}

/// Sends SIGKILL to `pid`.
fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped (it is removed from the
    // lists before the wait that reaps it), so it cannot name another process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// A scenario's context: what it uses to run peers, record figures and check requirements.
pub struct Ctx {
    /// What the runner sees.
    pub shared: Arc<Shared>,
    /// When the scenario must be over: every wait ends by then.
    pub deadline: Instant,
    /// This test binary, which peers run.
    exe: PathBuf,
    /// The seed of the payloads (printed, so that a mismatch can be replayed).
    pub seed: u64,
}

impl Ctx {
    /// A context for a scenario that must end within `limit`.
    pub fn new(shared: Arc<Shared>, limit: Duration, seed: u64) -> Ctx {
        let exe = std::env::current_exe().expect("the path of this test binary");
        Ctx {
            deadline: shared.start + limit,
            shared,
            exe,
            seed,
        }
    }

    /// Logs a harness step.
    pub fn step(&self, what: &str) {
        self.shared.log(&format!("harness: {what}"));
    }

    /// Records a measured figure (printed with the result, pass or fail).
    pub fn figure(&self, what: &str, value: String) {
        self.shared.log(&format!("figure: {what} = {value}"));
        lock(&self.shared.figures).push((what.to_string(), value));
    }

    /// Records a duration as a figure, in seconds.
    pub fn seconds(&self, what: &str, d: Duration) {
        self.figure(what, format!("{:.3} s", d.as_secs_f64()));
    }

    /// Checks a requirement of the issue without stopping the scenario, so that one run
    /// measures everything that comes after a violation too; the scenario fails at its
    /// end if any did not hold.
    pub fn require(&self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            let what = what();
            self.shared.log(&format!("REQUIREMENT FAILED: {what}"));
            lock(&self.shared.failed).push(what);
        }
    }

    /// A new topology, deleted when the returned value drops.
    ///
    /// # Errors
    ///
    /// The setup command that failed.
    pub fn topology(&self, options: netns::Options) -> Result<Topology, Failure> {
        let topo = Topology::new(options.clone()).map_err(|e| format!("topology: {e}"))?;
        self.step(&format!(
            "topology {options:?}: namespaces {} {} {}, client {} server {}",
            topo.client_ns,
            topo.router_ns,
            topo.server_ns,
            topo.client_ip(netns::ClientNet::Home),
            topo.server_ip()
        ));
        Ok(topo)
    }

    /// Starts `command` (its output piped) as the process `name`, and records its pid, to
    /// be killed if the test ends early.
    fn start(&self, name: &str, command: &mut Command) -> Result<Child, Failure> {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        lock(&CHILDREN).push(child.id());
        lock(&self.shared.pids).push(child.id());
        Ok(child)
    }

    /// Starts peer `name` in namespace `ns`: `<exe> peer <args>`.
    ///
    /// # Errors
    ///
    /// If it cannot start.
    pub fn spawn(&self, name: &str, ns: &str, args: &[String]) -> Result<Peer, Failure> {
        self.step(&format!("start {name} in {ns}: peer {}", args.join(" ")));
        let mut command = Topology::command(ns, &self.exe);
        command.arg("peer").args(args).stdin(Stdio::piped());
        let mut child = self.start(name, &mut command)?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let shared = Arc::clone(&self.shared);
        let label = name.to_string();
        thread::spawn(move || {
            // Progress comes ten times a second; the log keeps one a second of it.
            let mut progress_logged: Option<Instant> = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let progress = line.starts_with("@progress ");
                if !progress || progress_logged.is_none_or(|t| at - t >= Duration::from_secs(1)) {
                    shared.log(&format!("{label}: {line}"));
                    if progress {
                        progress_logged = Some(at);
                    }
                }
                if let Some(event) = Event::parse(&line, at) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        let shared = Arc::clone(&self.shared);
        let label = name.to_string();
        thread::spawn(move || forward_stderr(stderr, &label, &shared));
        let stdin = child.stdin.take();
        Ok(Peer {
            name: name.to_string(),
            child,
            pid,
            stdin,
            rx,
            history: Vec::new(),
            gone: false,
            shared: Arc::clone(&self.shared),
            deadline: self.deadline,
        })
    }

    /// Starts `program args` in namespace `ns` with `envs` set, as a daemon of the
    /// scenario (a load balancer): its output goes to the log, and it is killed with the
    /// peers (watchdog, signals) and when dropped.
    ///
    /// # Errors
    ///
    /// If it cannot start.
    pub fn spawn_daemon(
        &self,
        name: &str,
        ns: &str,
        program: &str,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Result<Daemon, Failure> {
        self.step(&format!(
            "start {name} in {ns}: {program} {}",
            args.join(" ")
        ));
        let mut command = Topology::command(ns, program.as_ref());
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let mut child = self.start(name, &mut command)?;
        let pid = child.id();
        for (out, label) in [
            (
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn Read + Send>),
                name.to_string(),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|e| Box::new(e) as Box<dyn Read + Send>),
                format!("{name} (stderr)"),
            ),
        ] {
            let shared = Arc::clone(&self.shared);
            if let Some(out) = out {
                thread::spawn(move || forward_lines(out, &label, &shared));
            }
        }
        Ok(Daemon {
            name: name.to_string(),
            child,
            pid,
            shared: Arc::clone(&self.shared),
            gone: false,
        })
    }

    /// Sleeps for `d`, as a fault schedule says ("a blackhole for 30 s"), never past the
    /// scenario's deadline.
    pub fn hold(&self, d: Duration, why: &str) {
        self.step(&format!("hold {:.1} s: {why}", d.as_secs_f64()));
        let until = (Instant::now() + d).min(self.deadline);
        thread::sleep(until.saturating_duration_since(Instant::now()));
    }
}

/// Logs a peer's stderr line by line (panics and library logs land there).
fn forward_stderr(stderr: impl Read, label: &str, shared: &Shared) {
    forward_lines(stderr, &format!("{label} (stderr)"), shared);
}

/// Logs what a process writes, line by line, labelled.
fn forward_lines(out: impl Read, label: &str, shared: &Shared) {
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        shared.log(&format!("{label}: {line}"));
    }
}

/// A program that is not a peer (a load balancer), run in a namespace; killed and reaped
/// when dropped, whatever happened.
pub struct Daemon {
    /// Its name in the log.
    pub name: String,
    child: Child,
    pid: u32,
    shared: Arc<Shared>,
    /// Killed and reaped already.
    gone: bool,
}

impl Daemon {
    /// Kills it with SIGKILL (a crash) and reaps it; the pid is forgotten first, so that
    /// no kill by pid reaches a process that reuses the number.
    pub fn kill(&mut self) {
        if self.gone {
            return;
        }
        self.shared.log(&format!("harness: SIGKILL {}", self.name));
        forget(self.pid, &self.shared);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.gone = true;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes `pid` from the lists of live processes, so that no kill by pid can reach a
/// process that reuses the number once it is reaped.
fn forget(pid: u32, shared: &Shared) {
    let mut children = lock(&CHILDREN);
    let mut pids = lock(&shared.pids);
    children.retain(|p| *p != pid);
    pids.retain(|p| *p != pid);
}

/// A peer process in a namespace; killed and reaped when dropped, whatever happened.
pub struct Peer {
    /// Its name in the log and in failure messages.
    pub name: String,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    rx: Receiver<Event>,
    /// Every event it reported, in order.
    history: Vec<Event>,
    /// Its stdout closed: it exited.
    gone: bool,
    shared: Arc<Shared>,
    deadline: Instant,
}

impl Peer {
    /// Sends one command line.
    ///
    /// # Errors
    ///
    /// If the peer's stdin is closed (it exited).
    pub fn send(&mut self, command: &str) -> Result<(), Failure> {
        self.shared
            .log(&format!("harness -> {}: {command}", self.name));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: stdin already closed", self.name))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: cannot send {command:?} ({e}); it exited?", self.name))
    }

    /// Takes in what the peer reported so far, without waiting; returns the number of
    /// events, a cursor for [`wait`](Self::wait) that skips everything before now.
    pub fn cursor(&mut self) -> usize {
        while let Ok(event) = self.rx.try_recv() {
            self.history.push(event);
        }
        self.history.len()
    }

    /// Waits up to `limit` (and never past the scenario's deadline) for an event from
    /// index `from` on that satisfies `pred`.
    ///
    /// # Errors
    ///
    /// If the time runs out or the peer exits first; the message names `what` and says
    /// where the peer's session stood.
    pub fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        from: usize,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, Failure> {
        let window = format!("within {:.1} s", limit.as_secs_f64());
        self.wait_until(what, Instant::now() + limit, &window, from, pred)
    }

    /// As [`wait`](Self::wait), up to the instant `until`; `window` says in words how long
    /// that was, for the failure message ("within 60 s of the path returning").
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_until(
        &mut self,
        what: &str,
        until: Instant,
        window: &str,
        from: usize,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, Failure> {
        let cut_short = until > self.deadline;
        let until = until.min(self.deadline);
        self.cursor();
        if let Some(event) = self.history.iter().skip(from).find(|e| pred(e)) {
            return Ok(event.clone());
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => {
                    let hit = pred(&event);
                    self.history.push(event);
                    if hit {
                        return Ok(self.history[self.history.len() - 1].clone());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let why = if cut_short {
                        " (cut short by the scenario's time limit)"
                    } else {
                        ""
                    };
                    let standing = self.standing();
                    return Err(format!(
                        "{}: no {what} {window}{why}; {standing}",
                        self.name
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.gone = true;
                    let status = self
                        .reap(Duration::from_secs(2))
                        .map_or("still running; killed".into(), |s| s.to_string());
                    let standing = self.standing();
                    return Err(format!(
                        "{}: exited ({status}) before {what}; {standing}",
                        self.name
                    ));
                }
            }
        }
    }

    /// The latest event named `name` about session `s`, if any.
    pub fn last(&mut self, name: &str, s: usize) -> Option<Event> {
        self.cursor();
        self.history.iter().rev().find(|e| e.is(name, s)).cloned()
    }

    /// Every event so far, for scenarios that look back.
    pub fn history(&mut self) -> &[Event] {
        self.cursor();
        &self.history
    }

    /// Where the peer stood: its latest progress, state and error reports.
    pub fn standing(&mut self) -> String {
        self.cursor();
        let mut parts = Vec::new();
        for name in [
            "fatal",
            "connect_failed",
            "accept_error",
            "command_error",
            "progress",
            "state",
            "read_error",
            "write_error",
            "mismatch",
            "eof",
            "shutdown",
        ] {
            let latest: Vec<&Event> = {
                let mut seen = Vec::new();
                for e in self.history.iter().rev().filter(|e| e.name == name) {
                    if !seen.iter().any(|s: &&Event| s.get("s") == e.get("s")) {
                        seen.push(e);
                    }
                }
                seen
            };
            for e in latest.into_iter().rev() {
                parts.push(describe(e));
            }
        }
        if parts.is_empty() {
            "it reported nothing yet".into()
        } else {
            format!("last reported: {}", parts.join("; "))
        }
    }

    /// Closes stdin (the peer exits at once) and waits up to `limit` for it to exit.
    ///
    /// # Errors
    ///
    /// If it does not exit in time (it is killed) or exits unsuccessfully.
    pub fn finish(&mut self, limit: Duration) -> Result<(), Failure> {
        self.shared
            .log(&format!("harness: close {}'s stdin", self.name));
        self.stdin = None;
        match self.reap(limit) {
            Some(status) if status.success() => Ok(()),
            Some(status) => {
                let standing = self.standing();
                Err(format!("{} exited with {status}; {standing}", self.name))
            }
            None => Err(format!(
                "{} did not exit within {limit:?} of its stdin closing",
                self.name
            )),
        }
        .inspect_err(|_| {
            self.gone = true;
        })
    }

    /// Kills the peer with SIGKILL (as a crash or a pulled power cord would end it) and
    /// reaps it.
    pub fn kill(&mut self) {
        self.shared.log(&format!("harness: SIGKILL {}", self.name));
        self.forget_pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.gone = true;
    }

    /// Waits up to `limit` for the process to exit, killing it if it does not; `None` if
    /// it had to be killed.
    fn reap(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            // Reaped and forgotten under the locks of the pid lists, so that no kill by
            // pid can reach a process that reused the number.
            let mut children = lock(&CHILDREN);
            let mut pids = lock(&self.shared.pids);
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    children.retain(|p| *p != self.pid);
                    pids.retain(|p| *p != self.pid);
                    return Some(status);
                }
                Ok(None) if Instant::now() < until => {
                    drop((children, pids));
                    thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    drop((children, pids));
                    self.kill();
                    return None;
                }
            }
        }
    }

    fn forget_pid(&mut self) {
        forget(self.pid, &self.shared);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.gone || matches!(self.child.try_wait(), Ok(None)) {
            self.forget_pid();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One event in a failure message.
pub fn describe(e: &Event) -> String {
    let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match &e.msg {
        Some(msg) => format!("{} {} ({msg})", e.name, fields.join(" ")),
        None => format!("{} {}", e.name, fields.join(" ")),
    }
}

/// Locks `m`, taking over a lock poisoned by a panicking scenario: the data (logs,
/// pids) is still what the runner needs.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
