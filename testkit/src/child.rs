//! Child processes of a bench or example that re-runs its own binary: the parent's handle
//! on one ([`Peer`]: started, read from, stopped) and the child's side
//! ([`exit_on_stdin_eof`]). A child exits when its stdin closes, so the death of the
//! parent ends it too and no child outlives a run.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// A child process with its stdin (closing it ends the child) and its stdout lines.
pub struct Peer {
    name: &'static str,
    child: Child,
    /// Its stdin: set to `None` to close it, which ends the child.
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Peer {
    /// Starts `current_exe args...` through `sh`, which first raises the soft open-file
    /// limit to the hard one: each session holds at least one socket.
    pub fn start(name: &'static str, args: &[String]) -> io::Result<Peer> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -S -n "$(ulimit -H -n)" && exec "$0" "$@""#)
            .arg(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        // A reader thread, so that the parent can wait for a line with a timeout. It ends
        // when the child's stdout closes, which disconnects the channel.
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Peer {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix`, split into its words after the prefix.
    pub fn expect_line(&self, prefix: &str, deadline: Instant) -> io::Result<Vec<String>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace();
                    if words.next() == Some(prefix) {
                        return Ok(words.map(str::to_owned).collect());
                    }
                    eprintln!("  {}: unexpected line: {line}", self.name);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::other(format!(
                        "the {} printed no '{prefix}' line in time",
                        self.name
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other(format!(
                        "the {} exited before printing '{prefix}'",
                        self.name
                    )))
                }
            }
        }
    }

    /// Closes stdin and waits, for at most `grace`, for the child to exit; kills it after.
    /// Returns whether it exited by itself.
    pub fn finish(&mut self, grace: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Peer {
    /// On any error path the child is killed, so that no child outlives the parent's run.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exits the process when stdin reaches end of file (or fails): that is how the parent
/// ends a child, and a parent that died closes it too. The main thread may be blocked in
/// `accept` or `connect` meanwhile, hence a thread. The exit drops nothing: sessions are
/// not closed gracefully, which would only slow the exit down.
pub fn exit_on_stdin_eof() -> std::thread::JoinHandle<()> {
    thread::Builder::new()
        .name("stdin-watcher".into())
        .spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = io::stdin();
            // Each read either returns data (ignored), or 0 / an error, which ends the loop.
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        })
        .expect("spawn the stdin watcher")
}
