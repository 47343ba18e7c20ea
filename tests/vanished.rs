//! Vanished clients must not hold a server's capacity for good (issue 8, item 5): a full
//! server evicts the session whose client has been gone longest, once it has been gone
//! for the silence limit, and a new client gets in.
//!
//! The clients that vanish live in a child process (this test binary again, running
//! [`vanishing_clients`]), which is killed: in-process clients would keep sending their
//! heartbeats.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, Error, RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::session::{fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(60);
const SESSIONS: usize = 4;
/// Tells the child process where the server is.
const SERVER_ENV: &str = "ROBUST_TCP_VANISHED_SERVER";

/// The child process; killed and reaped when dropped, whatever happened.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Proves: at max_sessions, with every client's process killed, a new client is admitted
// within seconds, and exactly one old session makes room, failing with `Evicted` on the
// server side while the others go on waiting.
#[test]
fn a_full_server_of_vanished_clients_admits_a_new_one() {
    run_bounded(LIMIT, || {
        let config = fast_config().max_sessions(SESSIONS);
        let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
        let addr = server_addr(&server);
        let exe = std::env::current_exe().expect("the test binary");
        let child = Command::new(exe)
            .args(["--exact", "vanishing_clients", "--ignored", "--nocapture"])
            .env(SERVER_ENV, addr.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child process");
        let mut child = Killed(child);
        let old: Vec<RSocket> = (0..SESSIONS)
            .map(|_| server.accept().expect("accept an old session").0)
            .collect();
        let stdout = child.0.stdout.take().expect("the child's stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "ready");
        assert!(ready, "the child did not open its sessions");
        drop(child);

        let started = Instant::now();
        let acceptor = thread::spawn(move || {
            let accepted = server.accept();
            (server, accepted)
        });
        let mut newcomer = RSocket::connect_with(addr, Config::default()).expect("get in");
        let (_server, accepted) = join(acceptor);
        let (mut accepted, _) = accepted.expect("accept the newcomer");
        eprintln!(
            "the new client got in {:?} after the old ones vanished",
            started.elapsed()
        );

        newcomer.write_all(b"hello").expect("write");
        newcomer.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"hello");

        let (evicted, waiting): (Vec<&RSocket>, Vec<&RSocket>) = old
            .iter()
            .partition(|sock| sock.status().state == SessionState::Closed);
        assert_eq!(evicted.len(), 1, "exactly one session makes room");
        assert!(waiting
            .iter()
            .all(|sock| sock.status().state == SessionState::Reconnecting));
        let mut buf = [0u8; 1];
        let e = { evicted[0] }
            .read(&mut buf)
            .expect_err("the evicted session fails");
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
        assert!(matches!(inner, Some(Error::Evicted { .. })), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    });
}

/// The child process of the test above: opens the sessions, says `ready`, and waits to be
/// killed (giving up by itself after the test's time limit).
#[test]
#[ignore = "run by a_full_server_of_vanished_clients_admits_a_new_one, in a child process"]
fn vanishing_clients() {
    let addr = std::env::var(SERVER_ENV).expect("run by the test above, which names the server");
    let sessions: Vec<RSocket> = (0..SESSIONS)
        .map(|_| RSocket::connect_with(addr.as_str(), fast_config()).expect("connect"))
        .collect();
    println!("ready");
    io::stdout().flush().expect("flush");
    thread::sleep(LIMIT);
    drop(sessions);
}
