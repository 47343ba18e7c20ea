//! Helpers shared by rtcp's integration tests: free ports, child processes that are always
//! killed, waiting for a port to listen, keys (state directories and an authorized_keys
//! file for a server and its client), a tunnel (`rtcp client` -> fault proxy -> `rtcp
//! server` -> target) and small TCP targets that run one handler per connection.
//!
//! Each test file includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use robust_tcp_testkit::bounded::poll_until;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};

/// The rtcp binary cargo built for these tests.
pub const RTCP: &str = env!("CARGO_BIN_EXE_rtcp");

/// How long a process may take to start listening (a debug binary on a busy 2-core
/// machine starts in well under a second; this only bounds a hang).
const START_LIMIT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
///
/// The listener is dropped before the port is handed to a process, so another process
/// could take it in between; [`Proc::wait_listening`] then fails with the child's stderr
/// rather than talking to a stranger for long.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port").port()
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process that is killed and reaped when dropped, on every exit path (a failed
/// assertion unwinds through the drop). Its stderr is collected by a thread so that
/// failures can show it and the child never blocks on a full pipe.
pub struct Proc {
    name: String,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    drain: Option<JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with its stderr collected; stdin and stdout are as `cmd` says
    /// (callers set them; [`Proc::rtcp`] nulls them).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        let drain = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends at the child's exit (the pipe's end of stream) or on an error.
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Proc {
            name: name.to_string(),
            child,
            stderr,
            drain: Some(drain),
        }
    }

    /// `rtcp ARGS... --quiet`, stdin and stdout closed. `--quiet` keeps the status line
    /// off (stderr is a pipe anyway), so stderr holds only errors worth showing.
    pub fn rtcp(name: &str, args: &[String]) -> Proc {
        let mut cmd = Command::new(RTCP);
        cmd.args(args)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Proc::spawn(name, cmd)
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// What the child wrote on stderr so far (lossy UTF-8), for failure messages.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the child's stderr holds `needle`.
    pub fn wait_stderr(&self, needle: &str, limit: Duration) {
        let found = poll_until(limit, || self.stderr().contains(needle));
        assert!(
            found,
            "{} did not log {needle:?} within {limit:?}; its stderr:\n{}",
            self.name,
            self.stderr()
        );
    }

    /// Panics, with the child's stderr, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited early ({status}); its stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Polls a TCP connect to `addr` until it succeeds, failing with the child's stderr if
    /// the child exits first or `START_LIMIT` passes. The probe connection is closed at
    /// once; targets behind a tunnel see it as an empty connection.
    pub fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            self.assert_running();
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {addr} after {START_LIMIT:?}; its stderr:\n{}",
                self.name,
                self.stderr()
            );
            thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the child to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut status = None;
        let exited = poll_until(limit, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(
            exited,
            "{} did not exit within {limit:?}; its stderr:\n{}",
            self.name,
            self.stderr()
        );
        status.expect("exited")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Killing an exited child fails harmlessly; wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// The keys of one `rtcp server` and one `rtcp client` that it admits: a state directory
/// for each (where each generates its key on first use, and the client pins the server's
/// key) and the server's authorized_keys file listing the client's key, all in a
/// temporary directory that goes when this is dropped.
///
/// ```text
/// let keys = Keys::new();
/// rtcp server --listen A --forward T  + keys.server_args()
/// rtcp client --listen L --server A   + keys.client_args()
/// rtcp connect A                      + keys.client_args()
/// ```
pub struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// Makes the client's key (with `rtcp fingerprint`) and lists it in the server's
    /// authorized_keys; the server makes its key at its first start.
    pub fn new() -> Keys {
        let keys = Keys {
            dir: tempfile::Builder::new()
                .prefix("rtcp-keys-")
                .tempdir()
                .expect("make a temporary directory for keys"),
        };
        let client = fingerprint(&keys.client_state(), false);
        std::fs::write(
            keys.authorized_keys(),
            format!("# the test's client\n{client} test client\n"),
        )
        .expect("write authorized_keys");
        keys
    }

    /// The server's state directory (its key).
    pub fn server_state(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// The client's state directory (its key, and `known_servers`).
    pub fn client_state(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// The server's `--authorized-keys` file.
    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    /// `--state-dir DIR --authorized-keys FILE`, for `rtcp server`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            path_arg(&self.server_state()),
            "--authorized-keys".into(),
            path_arg(&self.authorized_keys()),
        ]
    }

    /// `--state-dir DIR`, for `rtcp client` and `rtcp connect`.
    pub fn client_args(&self) -> Vec<String> {
        vec!["--state-dir".into(), path_arg(&self.client_state())]
    }
}

/// A path as a command-line argument (the temporary directories are UTF-8).
fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// `rtcp fingerprint [--server] --state-dir STATE`: the key's fingerprint
/// (`SHA256:...`), made first if the state directory has no key yet.
pub fn fingerprint(state: &Path, server: bool) -> String {
    let mut cmd = Command::new(RTCP);
    cmd.arg("fingerprint").arg("--state-dir").arg(state);
    if server {
        cmd.arg("--server");
    }
    let out = cmd.output().expect("run rtcp fingerprint");
    assert!(
        out.status.success(),
        "rtcp fingerprint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a UTF-8 fingerprint")
        .trim()
        .to_owned()
}

/// Global options given to both rtcp processes of a tunnel.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--insecure-plaintext` on both ends (and no keys), instead of TLS.
    pub insecure_plaintext: bool,
    /// `--buffer-size`, if set.
    pub buffer_size: Option<usize>,
    /// More arguments for `rtcp server` only.
    pub server_args: Vec<String>,
    /// More arguments for `rtcp client` only.
    pub client_args: Vec<String>,
}

impl Options {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.insecure_plaintext {
            args.push("--insecure-plaintext".to_string());
        }
        if let Some(size) = self.buffer_size {
            args.extend(["--buffer-size".to_string(), size.to_string()]);
        }
        args
    }
}

/// `rtcp client` on a local port -> a [`FaultProxy`] -> `rtcp server` -> `target`, with
/// TLS unless [`Options::insecure_plaintext`]. Fields drop in order: the client, the
/// proxy, the server, then the keys.
pub struct Tunnel {
    pub client: Proc,
    pub proxy: FaultProxy,
    pub server: Proc,
    /// The keys both ends use (unused with `--insecure-plaintext`).
    pub keys: Keys,
    /// Where local programs connect (`rtcp client --listen`).
    pub entry: SocketAddr,
    /// `rtcp server --listen`, for tests that talk to it directly.
    pub server_addr: SocketAddr,
}

impl Tunnel {
    /// Starts the server (forwarding to `target`), the proxy with `plan` in front of it,
    /// and the client, and waits until both listen.
    ///
    /// Waiting for the client probes its port: that opens one session through the proxy
    /// (which may cut it) to the target, which sees an empty connection.
    pub fn start(target: SocketAddr, plan: CutPlan, options: &Options) -> Tunnel {
        let mut server_args = vec!["--forward".into(), target.to_string()];
        server_args.extend(options.args());
        server_args.extend(options.server_args.iter().cloned());
        let mut client_args = options.args();
        client_args.extend(options.client_args.iter().cloned());
        let keys = Keys::new();
        if !options.insecure_plaintext {
            server_args.extend(keys.server_args());
            client_args.extend(keys.client_args());
        }
        Tunnel::launch(keys, &server_args, "--listen", &client_args, plan)
    }

    /// Like [`Tunnel::start`], for SOCKS: the server takes the targets `allow` names
    /// (`--allow`, with no `--forward`), and the client's entry is a SOCKS5 port
    /// (`--socks`). Waiting for the client sends its SOCKS port an empty connection.
    pub fn start_socks(allow: &[&str], plan: CutPlan) -> Tunnel {
        let mut server_args = vec!["--allow".to_string()];
        server_args.extend(allow.iter().map(|p| p.to_string()));
        let keys = Keys::new();
        server_args.extend(keys.server_args());
        let client_args = keys.client_args();
        Tunnel::launch(keys, &server_args, "--socks", &client_args, plan)
    }

    /// `rtcp server --listen ADDR SERVER_ARGS...`, the proxy, and `rtcp client ENTRY_FLAG
    /// ADDR --server PROXY CLIENT_ARGS...`.
    fn launch(
        keys: Keys,
        server_args: &[String],
        entry_flag: &str,
        client_args: &[String],
        plan: CutPlan,
    ) -> Tunnel {
        let server_addr = local(free_port());
        // Options belong to the subcommand: `rtcp server --buffer-size N ...`.
        let mut args = vec!["server".into(), "--listen".into(), server_addr.to_string()];
        args.extend_from_slice(server_args);
        let mut server = Proc::rtcp("rtcp server", &args);
        // A plain connect to a robust server is refused and closed, which it survives
        // (tunnel.rs checks that it does).
        server.wait_listening(server_addr);
        let proxy = FaultProxy::start(server_addr, plan).expect("start the fault proxy");
        let (client, entry) = start_client(entry_flag, proxy.local_addr(), client_args);
        Tunnel {
            client,
            proxy,
            server,
            keys,
            entry,
            server_addr,
        }
    }

    /// Both processes' stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "proxy seed {}, {} cuts, {} connections\n--- rtcp client stderr:\n{}\n--- rtcp server stderr:\n{}",
            self.proxy.seed(),
            self.proxy.cuts(),
            self.proxy.connections(),
            self.client.stderr(),
            self.server.stderr()
        )
    }

    /// Panics with the logs unless both processes still run.
    pub fn assert_running(&mut self) {
        self.client.assert_running();
        self.server.assert_running();
    }
}

/// `rtcp client ENTRY_FLAG PORT --server SERVER ARGS...` on a free loopback port, once it
/// listens (which probes it: one session, or one SOCKS connection that says nothing), and
/// where local programs connect.
pub fn start_client(entry_flag: &str, server: SocketAddr, args: &[String]) -> (Proc, SocketAddr) {
    let entry = local(free_port());
    let mut all = vec![
        "client".into(),
        entry_flag.into(),
        entry.to_string(),
        "--server".into(),
        server.to_string(),
    ];
    all.extend_from_slice(args);
    let mut client = Proc::rtcp("rtcp client", &all);
    client.wait_listening(entry);
    (client, entry)
}

/// A TCP server on loopback that runs `handler` on its own thread for each connection and
/// sends what it returns on a channel. Dropping it stops accepting, shuts down every
/// connection it accepted (waking handlers blocked on them) and joins all its threads.
pub struct Target<R> {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// A clone of each connection whose handler runs, to wake it on drop.
    streams: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    acceptor: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    results: Receiver<R>,
}

impl<R: Send + 'static> Target<R> {
    pub fn start<F>(handler: F) -> Target<R>
    where
        F: Fn(TcpStream) -> R + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the target");
        let addr = listener.local_addr().expect("target address");
        let stopping = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let handlers = Arc::new(Mutex::new(Vec::new()));
        let (tx, results) = mpsc::channel();
        let handler = Arc::new(handler);
        let acceptor = {
            let (stopping, streams, handlers) = (
                Arc::clone(&stopping),
                Arc::clone(&streams),
                Arc::clone(&handlers),
            );
            thread::spawn(move || {
                for (id, stream) in listener.incoming().enumerate() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        streams.lock().unwrap().push((id, clone));
                    }
                    let (handler, tx, streams) =
                        (Arc::clone(&handler), tx.clone(), Arc::clone(&streams));
                    let worker = thread::spawn(move || {
                        let result = handler(stream);
                        // The clone must go before the result is reported: the socket
                        // closes (with a FIN, or an RST under SO_LINGER 0) only when its
                        // last descriptor does, and tests act on the result.
                        streams.lock().unwrap().retain(|(other, _)| *other != id);
                        // The receiver is gone only once the test has finished.
                        let _ = tx.send(result);
                    });
                    handlers.lock().unwrap().push(worker);
                }
            })
        };
        Target {
            addr,
            stopping,
            streams,
            acceptor: Some(acceptor),
            handlers,
            results,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next handler result, waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> R {
        match self.results.recv_timeout(limit) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no connection finished at the target within {limit:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the target's acceptor ended"),
        }
    }

    /// The first handler result that `keep` accepts, skipping others (the empty probe
    /// connections of [`Proc::wait_listening`]); waits at most `limit` in all.
    pub fn next_matching(&self, limit: Duration, keep: impl Fn(&R) -> bool) -> R {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.next(left);
            if keep(&r) {
                return r;
            }
        }
    }
}

impl<R> Drop for Target<R> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(); a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, stream) in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let handlers = std::mem::take(&mut *self.handlers.lock().unwrap());
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

/// A throwaway redis-server on a free loopback port: no persistence, so nothing is
/// written to disk, and killed when dropped.
pub fn start_redis() -> (Proc, SocketAddr) {
    let addr = local(free_port());
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .args(["--save", "", "--appendonly", "no"])
        // Its working directory would get a dump file only on SAVE; keep it in /tmp anyway.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut redis = Proc::spawn("redis-server", cmd);
    redis.wait_listening(addr);
    (redis, addr)
}

/// Reads `stream` to end of stream, returning everything (for small transfers).
pub fn read_all(mut stream: impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// A directory of a test's own under the system's temporary directory, removed with all it
/// holds when dropped (on every exit path: a failed assertion unwinds through the drop).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `$TMPDIR/rtcp-NAME-PID-N`, made empty; N tells apart the directories of one process.
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("rtcp-{name}-{}-{n}", std::process::id()));
        // A directory left by a killed run of a process with the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `test` can run: each of `programs` (a name on `PATH` or a path) can be
/// started. If one cannot, the test fails when `CI` is set (`.ci/run` installs them), and
/// otherwise says it is skipped, naming the Debian `packages` that provide them.
pub fn have_programs(test: &str, programs: &[&str], packages: &str) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            // Only whether it starts matters, not what it makes of the option.
            Command::new(program)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!(
        "{test}: missing {} (Debian packages {packages})",
        missing.join(", ")
    ));
    false
}

/// Says that a test is skipped, and why; fails instead when `CI` is set, where `.ci/run`
/// installed what every test needs.
pub fn skip(message: &str) {
    assert!(std::env::var_os("CI").is_none(), "{message}; CI is set");
    eprintln!("SKIPPED {message}");
}
