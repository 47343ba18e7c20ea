//! `RSocket::connect_timeout` bounds the opening, not the session's later reconnections.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use robust_tcp::RSocket;
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::session::{bind, exchange_seeded, server_addr};

const LIMIT: Duration = Duration::from_secs(30);

/// A proxy whose every connection after the first holds the server's bytes back for
/// `delay` after connecting: a reconnection's ANSWER comes `delay` after its HELLO, as over
/// a long path. Every socket it made is kept, so that a test can cut them all and the
/// copying threads end.
struct SlowProxy {
    addr: SocketAddr,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl SlowProxy {
    fn start(target: SocketAddr, delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sockets = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (Arc::clone(&sockets), Arc::clone(&stop));
        let acceptor = thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                // The proxy's own wake-up, once told to stop.
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    return;
                };
                let mut kept = kept.lock().unwrap();
                kept.extend([&client, &server].map(|s| s.try_clone().unwrap()));
                drop(kept);
                let hold = if n == 0 { Duration::ZERO } else { delay };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    None,
                );
                pipe(server, client, Some(hold));
            }
        });
        SlowProxy {
            addr,
            sockets,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Cuts every connection so far (the session's first one).
    fn cut(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the acceptor, which stops.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            join(acceptor);
        }
    }
}

/// Copies `from` to `to` on a thread of its own, after `hold`.
fn pipe(mut from: TcpStream, mut to: TcpStream, hold: Option<Duration>) {
    thread::spawn(move || {
        // The injected latency, not a synchronisation.
        thread::sleep(hold.unwrap_or_default());
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
fn a_short_connect_timeout_does_not_bound_later_reconnections() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        // Each reconnection takes 800 ms (the default handshake timeout is 5 s), more than
        // the 300 ms the application gave its connect.
        let proxy = SlowProxy::start(addr, Duration::from_millis(800));
        let mut client = RSocket::connect_timeout(&proxy.addr, Duration::from_millis(300))
            .expect("connect within 300 ms");
        client.write_all(b"hello").unwrap();
        let (mut accepted, _) = server.accept().unwrap();
        // Once the client reads the reply, it has the ANSWER: the session is open, and
        // what follows the cut is a reconnection, not a retried opening.
        accepted.write_all(b"ok").unwrap();
        let mut reply = [0u8; 2];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"ok");
        proxy.cut();
        // Bounded, so that a client that never gets a connection fails here rather than
        // at the watchdog: every reconnection attempt cut off at 300 ms never completes.
        let bound = Some(Duration::from_secs(10));
        client.set_read_timeout(bound).unwrap();
        accepted.set_read_timeout(bound).unwrap();
        let mut first = [0u8; 5];
        (&accepted).read_exact(&mut first).expect("the first bytes");
        assert_eq!(&first, b"hello");
        exchange_seeded(&client, &accepted, 64 << 10, 3);
        let status = client.status();
        assert!(status.reconnections >= 1, "{status:?}");
    });
}
