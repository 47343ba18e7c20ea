//! An accept that fails for want of file descriptors (EMFILE) must not make the server spin:
//! the connection waits in the kernel's backlog, and an acceptor that retries at once burns
//! a whole core until a descriptor frees. Once descriptors are back, the server works.
//!
//! Its own test binary with one test: it exhausts the process's descriptors, which would
//! break any test running beside it.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);
/// How long the process's CPU time is watched while the accept fails.
const WINDOW: Duration = Duration::from_secs(1);
/// The most CPU the process may use over the window, as a share of it. A bound that tells
/// an idle process (a few percent at most, from the test's own wake-ups) from one with a
/// spinning acceptor (about 100%); not a speed claim.
const MAX_CPU_SHARE: f64 = 0.3;
/// Clock ticks per second in /proc: USER_HZ, fixed at 100 by the kernel's ABI on the
/// architectures Linux runs tests on.
const USER_HZ: f64 = 100.0;

/// The process's CPU time (user and system, all threads), from `/proc/self/stat`, which
/// `stat` keeps open: re-read from the start, it gives fresh values without a descriptor.
fn cpu_time(stat: &mut File) -> Duration {
    let mut text = String::new();
    stat.rewind().expect("rewind /proc/self/stat");
    stat.read_to_string(&mut text)
        .expect("read /proc/self/stat");
    // Fields 14 and 15 (utime, stime) count from the closing parenthesis of the command
    // name, which may itself contain spaces.
    let after_name = &text[text.rfind(')').expect("stat has a command name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11..13]
        .iter()
        .map(|f| f.parse::<u64>().expect("utime and stime are numbers"))
        .sum();
    Duration::from_secs_f64(ticks as f64 / USER_HZ)
}

/// Opens `/dev/null` until the process has no descriptor left.
///
/// # Panics
///
/// On any failure other than EMFILE.
fn exhaust_descriptors() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("opening /dev/null failed otherwise than with EMFILE: {e}"),
        }
    }
}

// Proves: while the server's accept fails with EMFILE (a client waits in the backlog),
// the process uses well under a core (no spin); once descriptors are free again, a
// robust client opens a session, `accept` returns it, and its bytes arrive.
#[test]
fn an_accept_without_descriptors_does_not_spin() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        let mut stat = File::open("/proc/self/stat").expect("open /proc/self/stat");

        let mut held = exhaust_descriptors();
        // One descriptor for the client's socket; the server's accept then finds none.
        held.pop();
        let waiting = TcpStream::connect(addr).expect("connect into the backlog");

        let (cpu_before, start) = (cpu_time(&mut stat), Instant::now());
        // A measurement window, not a wait for anything: the acceptor has had the
        // connection since `connect` returned.
        thread::sleep(WINDOW);
        let (cpu, wall) = (cpu_time(&mut stat) - cpu_before, start.elapsed());
        drop(held);
        drop(waiting);
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        assert!(
            share < MAX_CPU_SHARE,
            "the process used {cpu:?} of CPU in {wall:?} ({:.0}%) while accept failed with \
             EMFILE: the acceptor spins",
            share * 100.0
        );

        let (mut client, mut accepted) = connect_pair(&server, addr, fast_config());
        client.write_all(b"descriptors back").expect("client write");
        let mut got = [0u8; 16];
        accepted.read_exact(&mut got).expect("server read");
        assert_eq!(&got, b"descriptors back");
    });
}
