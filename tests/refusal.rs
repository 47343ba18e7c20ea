//! Servers that refuse: one at its session limit (temporary: the client waits and gets in
//! later, or fails with `ConnectionRefused` once its `busy_limit` has passed) and one that
//! was dropped (permanent for new sessions, yet its sessions live on).

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Error, RServerSocket, RSocket, Refusal};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::carried;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, exchange_seeded, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn at_max_sessions_a_second_client_waits_until_the_first_session_closes() {
    run_bounded(LIMIT, || {
        let server =
            RServerSocket::bind_with("127.0.0.1:0", fast_config().max_sessions(1)).unwrap();
        let addr = server_addr(&server);
        let (first_client, first_accepted) = connect_pair(&server, addr, fast_config());

        // The server goes to a thread blocked in accept, in case the library does its
        // handshakes there; it is handed back with the second session.
        let acceptor = thread::spawn(move || {
            let accepted = server.accept();
            (server, accepted)
        });
        // A proxy that never cuts shows each connection attempt of the second client.
        let counter = FaultProxy::start(addr, CutPlan::never()).unwrap();
        let via_counter = counter.local_addr();
        // `connect` returns once the TCP connection is up; the first bytes wait in the
        // session, and the reply comes only once the server has the session.
        let connector = thread::spawn(move || -> io::Result<RSocket> {
            let mut sock = RSocket::connect_with(via_counter, fast_config())?;
            sock.write_all(b"second")?;
            let mut reply = [0u8; 2];
            sock.read_exact(&mut reply)?;
            assert_eq!(&reply, b"ok");
            Ok(sock)
        });
        wait_until(
            Duration::from_secs(10),
            "the second client to be refused and retry twice",
            || counter.connections() >= 3 || connector.is_finished(),
        );
        assert!(
            !connector.is_finished(),
            "the second client got a reply while max_sessions(1) was taken: {:?}",
            join(connector).map(|sock| sock.session_id())
        );
        assert!(
            !acceptor.is_finished(),
            "accept returned while max_sessions(1) was taken"
        );

        // The first session is unaffected, then closes on both sides.
        exchange_seeded(&first_client, &first_accepted, 256 << 10, counter.seed());
        drop(first_client);
        drop(first_accepted);

        let (_server, accepted) = join(acceptor);
        let (mut second_accepted, _peer) = accepted.expect("accept the second session");
        let mut first = [0u8; 6];
        second_accepted
            .read_exact(&mut first)
            .expect("read the second client's first bytes");
        assert_eq!(&first, b"second");
        second_accepted.write_all(b"ok").expect("reply");
        let second_client = join(connector).expect("the second client's opening");
        assert_eq!(second_client.session_id(), second_accepted.session_id());
        exchange_seeded(
            &second_client,
            &second_accepted,
            256 << 10,
            counter.seed() ^ 2,
        );
    });
}

#[test]
fn a_full_server_fails_a_new_client_with_connection_refused_within_its_busy_limit() {
    run_bounded(LIMIT, || {
        let config = fast_config().max_sessions_per_address(1);
        let server = RServerSocket::bind_with("127.0.0.1:0", config).unwrap();
        let addr = server_addr(&server);
        let (first_client, first_accepted) = connect_pair(&server, addr, fast_config());
        assert_eq!(server.refused_as_full(), 0);

        let busy_limit = Duration::from_secs(2);
        let started = Instant::now();
        let mut second = RSocket::connect_with(addr, fast_config().busy_limit(busy_limit))
            .expect("the TCP connect");
        // A client that is never told would wait for as long as the server stays full;
        // the read timeout turns that into this test's failure.
        second.set_read_timeout(Some(LIMIT / 3)).unwrap();
        second
            .write_all(b"second")
            .expect("the first bytes go into the session");
        let read = second.read(&mut [0u8; 8]);
        let waited = started.elapsed();
        let e = match read {
            Ok(n) => panic!("a full server's session gave {n} bytes"),
            Err(e) => e,
        };
        assert_eq!(
            e.kind(),
            io::ErrorKind::ConnectionRefused,
            "{e} after {waited:?}"
        );
        let refused = Error::Refused(Refusal::TooManySessions);
        assert_eq!(carried("a session with a full server", &e), &refused);
        assert!(waited <= busy_limit + Duration::from_secs(1), "{waited:?}");
        let write = second
            .write(b"more")
            .expect_err("a write after the refusal");
        assert_eq!(write.kind(), io::ErrorKind::ConnectionRefused, "{write}");
        // The server's operator sees the refusals too: at least the first attempt's.
        assert!(server.refused_as_full() >= 1);

        // The session that holds the address's one slot is untouched.
        exchange_seeded(&first_client, &first_accepted, 256 << 10, 18);
    });
}

#[test]
fn a_dropped_server_refuses_new_sessions_but_keeps_its_sessions_through_cuts() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        // 15 cut points of at most 128 KiB all fall within the 4 MiB exchanged below.
        let proxy = FaultProxy::start(addr, CutPlan::random(15, 128 << 10)).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        drop(server);

        // Bounded, so that a client that retries instead of failing fails the assertion
        // (with TimedOut) rather than the watchdog.
        let config = fast_config().give_up_after(Some(Duration::from_secs(5)));
        let sock = RSocket::connect_with(addr, config).expect("the TCP connect");
        match (&sock).read(&mut [0u8; 8]) {
            Ok(n) => panic!("a dropped server's session gave {n} bytes"),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                let refused = Error::Refused(Refusal::ServerClosed);
                assert_eq!(carried("a session with a dropped server", &e), &refused);
            }
        }

        exchange_seeded(&client, &accepted, 2 << 20, seed);
        assert!(
            proxy.cuts() >= 10,
            "seed {seed}: only {} cuts",
            proxy.cuts()
        );
        let status = client.status();
        assert!(status.reconnections >= 1, "seed {seed}: {status:?}");
    });
}
