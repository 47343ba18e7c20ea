//! The tests' plumbing: child processes killed when dropped, and relays between a real
//! program and a robust-tcp socket.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Output};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket, Status};
use robust_tcp_testkit::bounded::wait_until;

/// A child process, killed and reaped when dropped (a failed assertion included).
pub struct Proc(Option<Child>);

impl From<Child> for Proc {
    fn from(child: Child) -> Self {
        Proc(Some(child))
    }
}

impl Proc {
    /// Waits until something accepts TCP connections at `addr` (at most 10 s).
    pub fn wait_listening(&self, addr: SocketAddr) {
        wait_until(Duration::from_secs(10), "the program to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// Its output once it exits, which must be within `limit` (else it is killed and the
    /// test fails).
    pub fn wait_output(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("a child");
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("the child's status") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the program did not exit within {limit:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let collect = |h: Option<JoinHandle<Vec<u8>>>| h.map(|h| h.join().unwrap_or_default());
        Output {
            status,
            stdout: collect(stdout).unwrap_or_default(),
            stderr: collect(stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// Either end of a relay.
trait Duplex: Read + Write + Send + Sized + 'static {
    fn another(&self) -> Self;
    fn end_write(&self);
}

impl Duplex for TcpStream {
    fn another(&self) -> Self {
        self.try_clone().expect("clone a TCP stream")
    }
    fn end_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Duplex for RSocket {
    fn another(&self) -> Self {
        self.try_clone().expect("clone an RSocket")
    }
    fn end_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Copies both ways between `a` and `b`, passing each end of stream on.
fn splice(a: impl Duplex, b: impl Duplex) -> [JoinHandle<()>; 2] {
    let (a2, b2) = (a.another(), b.another());
    [pipe(a, b2), pipe(b, a2)]
}

fn pipe(mut from: impl Duplex, mut to: impl Duplex) -> JoinHandle<()> {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        to.end_write();
    })
}

/// A relay that takes a fixed number of connections at `addr`.
pub struct Relay {
    pub addr: SocketAddr,
    relayed: JoinHandle<Vec<Status>>,
}

impl Relay {
    /// Waits for every connection to end both ways; the robust-tcp socket's status of
    /// each, as it was when the connection began.
    pub fn finish(self) -> Vec<Status> {
        self.relayed.join().expect("the relay")
    }
}

/// Serves `n` relayed connections on `listen`'s thread: `relay` makes each one's two
/// ends, and the status of its robust-tcp socket.
fn serve(
    n: usize,
    mut relay: impl FnMut() -> (Status, [JoinHandle<()>; 2]) + Send + 'static,
) -> JoinHandle<Vec<Status>> {
    thread::spawn(move || {
        let (statuses, pipes): (Vec<_>, Vec<_>) = (0..n).map(|_| relay()).unzip();
        for pipe in pipes.into_iter().flatten() {
            let _ = pipe.join();
        }
        statuses
    })
}

/// An `RServerSocket` with `config` whose `n` next accepted sockets are relayed to an
/// ordinary server at `target`.
pub fn robust_relay(config: Config, target: SocketAddr, n: usize) -> Relay {
    let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
    let addr = server.local_addr().expect("address");
    let relayed = serve(n, move || {
        let (sock, _) = server.accept().expect("accept");
        let status = sock.status();
        let out = TcpStream::connect(target).expect("reach the target");
        (status, splice(sock, out))
    });
    Relay { addr, relayed }
}

/// A local TCP port whose `n` next connections are relayed each by an `RSocket` with
/// `config` to `target`.
pub fn fallback_relay(config: Config, target: SocketAddr, n: usize) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let relayed = serve(n, move || {
        let (conn, _) = listener.accept().expect("accept");
        let sock = RSocket::connect_with(target, config.clone()).expect("reach the target");
        (sock.status(), splice(conn, sock))
    });
    Relay { addr, relayed }
}
