//! A server restart: the old server process dies with all its state and a new one binds
//! the same port. The old client must fail with `ConnectionReset` and must never be
//! adopted by the new server.
//!
//! The old server runs in a child process (this test binary again, running only the
//! ignored `child_server` test), so that killing it really destroys every session.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{self, Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::Duration;

use robust_tcp::{Error, RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::{assert_kind, carried};
use robust_tcp_testkit::session::fast_config;

const LIMIT: Duration = Duration::from_secs(30);
/// Set in the child's environment: only then does `child_server` act as a server.
const CHILD_ENV: &str = "ROBUST_TCP_RESTART_CHILD";
/// The child announces its port on stdout with this prefix.
const PORT_LINE: &str = "robust-tcp child server port: ";

/// Not a test: the old server of `a_restarted_server_resets_old_sessions`, which runs it in
/// a child process with [`CHILD_ENV`] set. It binds an ephemeral loopback port, prints it,
/// and echoes every session until killed. Without the variable it returns at once, so
/// `cargo test -- --ignored` stays harmless.
#[test]
#[ignore = "helper process of a_restarted_server_resets_old_sessions"]
fn child_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Our stdin is a pipe from the parent test: when it closes (the parent exited, even by
    // crashing) this process ends too, so no orphan server outlives the test run.
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        process::exit(0);
    });
    let server = RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("child bind");
    let port = server.local_addr().expect("child address").port();
    println!("{PORT_LINE}{port}");
    for sock in server.incoming() {
        let sock = sock.expect("child accept");
        thread::spawn(move || {
            let _ = io::copy(&mut &sock, &mut &sock);
        });
    }
}

/// The old server's process; killed (and reaped) on drop at the latest.
struct ChildServer {
    child: Child,
    port: u16,
    // Kept open so that the child never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    fn spawn() -> ChildServer {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut child = Command::new(exe)
            .args(["child_server", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child server");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let port = read_port(&mut stdout);
        ChildServer {
            child,
            port,
            _stdout: stdout,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// SIGKILL: the process gets no chance to close anything gracefully.
    fn kill(&mut self) {
        self.child.kill().expect("kill the child server");
        self.child.wait().expect("reap the child server");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // Already dead after kill(); errors only say so.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips the test harness's own output up to the child's port line.
fn read_port(stdout: &mut impl BufRead) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout
            .read_line(&mut line)
            .expect("read the child's stdout");
        assert!(n > 0, "the child server exited without announcing its port");
        // The harness prints "test child_server ... " on the same line, before it.
        if let Some((_, port)) = line.trim().split_once(PORT_LINE) {
            return port.parse().expect("the child's port");
        }
    }
}

/// Binds a new server on `addr` as soon as the dead server's port is free again.
fn bind_when_free(addr: SocketAddr) -> RServerSocket {
    let mut server = None;
    wait_until(Duration::from_secs(10), "the dead server's port", || {
        match RServerSocket::bind_with(addr, fast_config()) {
            Ok(s) => server = Some(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => panic!("bind {addr}: {e}"),
        }
        server.is_some()
    });
    server.expect("bound")
}

/// Panics unless `result` failed because the new server does not know the session.
fn assert_reset<T: std::fmt::Debug>(what: &str, result: io::Result<T>) {
    let e = assert_kind(what, result, io::ErrorKind::ConnectionReset);
    assert_eq!(carried(what, &e), &Error::UnknownSession, "{what}");
}

#[test]
fn a_restarted_server_resets_old_sessions() {
    run_bounded(LIMIT, || {
        let mut old = ChildServer::spawn();
        let addr = old.addr();
        let client = RSocket::connect_with(addr, fast_config()).expect("connect");
        (&client)
            .write_all(b"ping")
            .expect("write to the old server");
        let mut echo = [0u8; 4];
        (&client)
            .read_exact(&mut echo)
            .expect("read the old server's echo");
        assert_eq!(&echo, b"ping");

        // A read that is pending when the server dies.
        let pending = client.try_clone().expect("try_clone");
        let reader = thread::spawn(move || (&pending).read(&mut [0u8; 16]));
        wait_until(Duration::from_secs(10), "the read to block", || {
            client.status().blocked_read.is_some()
        });

        old.kill();
        let new = bind_when_free(addr);
        // Accepting from the start: had the new server adopted the old client, that
        // session would be the first one out.
        let acceptor = thread::spawn(move || {
            let accepted = new.accept();
            (new, accepted)
        });

        wait_until(Duration::from_secs(10), "the pending read to fail", || {
            reader.is_finished()
        });
        assert_reset("the pending read", join(reader));
        assert_reset("a later write", (&client).write(b"more"));
        assert_reset("a later read", (&client).read(&mut [0u8; 16]));
        assert_eq!(client.status().state, SessionState::Closed);

        let mut fresh = RSocket::connect_with(addr, fast_config()).expect("a fresh client");
        fresh
            .write_all(b"sentinel")
            .expect("write on the fresh session");
        let (_new, accepted) = join(acceptor);
        let (mut accepted, _peer) = accepted.expect("accept on the new server");
        assert_eq!(
            accepted.session_id(),
            fresh.session_id(),
            "the new server's first session is not the fresh client's"
        );
        let mut marker = [0u8; 8];
        accepted
            .read_exact(&mut marker)
            .expect("read the fresh client");
        assert_eq!(&marker, b"sentinel");
    });
}
