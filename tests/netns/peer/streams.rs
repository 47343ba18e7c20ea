//! A session's threads in a peer: the reader that checks every byte, the writer that
//! writes paced, and the monitor that reports progress and state.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::rng::Rng;

use super::{
    emit, lock, millis_since, Session, Sessions, WriteCmd, BURST, MAX_WRITE, PROGRESS_EVERY,
    STATUS_POLL,
};

/// Reads until end of stream, checking every byte; reports `@eof` or the error.
pub(super) fn read_all(session: &Session, expected: Payload) {
    let (mut got, mut want) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut pos = 0u64;
    let s = ("s", session.index.to_string());
    loop {
        let n = match (&session.sock).read(&mut got) {
            Ok(0) => {
                emit("eof", &[s, ("total", pos.to_string())], None);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let fields = [
                    s,
                    ("kind", format!("{:?}", e.kind())),
                    ("total", pos.to_string()),
                ];
                emit("read_error", &fields, Some(&e.to_string()));
                return;
            }
        };
        expected.fill(pos, &mut want[..n]);
        if let Some(i) = got[..n].iter().zip(&want[..n]).position(|(g, w)| g != w) {
            let fields = [
                s,
                ("offset", (pos + i as u64).to_string()),
                ("got", got[i].to_string()),
                ("want", want[i].to_string()),
            ];
            emit(
                "mismatch",
                &fields,
                Some("lost, duplicated or reordered data"),
            );
            process::exit(1);
        }
        pos += n as u64;
        session.read.store(pos, Ordering::Relaxed);
        let mut mark = lock(&session.mark);
        if let Some(m) = mark.as_ref().filter(|m| pos - m.from >= m.need) {
            let fields = [
                s.clone(),
                ("id", m.id.to_string()),
                ("ms", millis_since(m.at)),
            ];
            emit("flow", &fields, None);
            *mark = None;
        }
    }
}

/// Carries out the writer's orders until `stop` (then shuts down writing) or an error.
pub(super) fn write_all(
    session: &Session,
    orders: &Receiver<WriteCmd>,
    stream: Payload,
    rate: u64,
    mut sizes: Rng,
) {
    let mut buf = vec![0u8; MAX_WRITE];
    let (mut streaming, mut quota, mut stopping) = (false, 0u64, false);
    let mut pace = Pacer::new(rate);
    let mut pos = 0u64;
    let s = ("s", session.index.to_string());
    loop {
        let busy = streaming || quota > 0;
        let order = if busy {
            match orders.try_recv() {
                Ok(order) => Some(order),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else if stopping {
            let result = session.sock.shutdown(Shutdown::Write);
            let fields = [s.clone(), ("total", pos.to_string())];
            match result {
                Ok(()) => emit("shutdown", &fields, None),
                Err(e) => emit("shutdown_error", &fields, Some(&e.to_string())),
            }
            return;
        } else {
            match orders.recv() {
                Ok(order) => Some(order),
                Err(_) => return,
            }
        };
        match order {
            Some(WriteCmd::Stream) => streaming = true,
            Some(WriteCmd::Bytes(n)) => quota += n,
            Some(WriteCmd::Stop) => (streaming, stopping) = (false, true),
            Some(WriteCmd::Quit) => return,
            None => {}
        }
        if !streaming && quota == 0 {
            continue;
        }
        let want = if sizes.chance(10) {
            sizes.range(1, 64)
        } else {
            sizes.range(1, MAX_WRITE as u64)
        };
        let n = if streaming { want } else { want.min(quota) } as usize;
        pace.wait(n);
        stream.fill(pos, &mut buf[..n]);
        if let Err(e) = (&session.sock).write_all(&buf[..n]) {
            let fields = [
                s,
                ("kind", format!("{:?}", e.kind())),
                ("total", pos.to_string()),
            ];
            emit("write_error", &fields, Some(&e.to_string()));
            return;
        }
        pos += n as u64;
        session.written.store(pos, Ordering::Relaxed);
        if !streaming {
            quota -= n as u64;
            if quota == 0 {
                emit("wrote", &[s.clone(), ("total", pos.to_string())], None);
            }
        }
    }
}

/// Paces a writer at `rate` bytes per second (0: as fast as it goes), so that a transfer
/// lasts through a fault schedule at a CPU cost that lets scenarios run side by side.
pub(super) struct Pacer {
    pub(super) rate: f64,
    pub(super) credit: f64,
    pub(super) last: Instant,
}

impl Pacer {
    pub(super) fn new(rate: u64) -> Pacer {
        Pacer {
            rate: rate as f64,
            credit: 0.0,
            last: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.credit = (self.credit + earned).min(BURST);
        self.last = now;
    }

    pub(super) fn wait(&mut self, n: usize) {
        if self.rate == 0.0 {
            return;
        }
        self.refill();
        let n = n as f64;
        if self.credit < n {
            thread::sleep(Duration::from_secs_f64((n - self.credit) / self.rate));
            self.refill();
        }
        self.credit -= n;
    }
}

/// Reports `@state` whenever a session's state, reconnections or last failure change,
/// and `@progress` every 100 ms while its counts move.
pub(super) fn spawn_monitor(sessions: Sessions) {
    thread::spawn(move || {
        pub(super) type Seen = (String, u64, Option<String>);
        let mut seen: HashMap<usize, (Option<Seen>, (u64, u64))> = HashMap::new();
        for tick in 0u32.. {
            let list: Vec<Arc<Session>> = lock(&sessions).clone();
            for session in &list {
                let (last, counts) = seen.entry(session.index).or_insert((None, (0, 0)));
                let status = session.sock.status();
                let now = (
                    format!("{:?}", status.state),
                    status.reconnections,
                    status.last_failure.clone(),
                );
                if last.as_ref() != Some(&now) {
                    let fields = [
                        ("s", session.index.to_string()),
                        ("state", now.0.clone()),
                        ("reconnections", now.1.to_string()),
                    ];
                    emit("state", &fields, now.2.as_deref());
                    *last = Some(now);
                }
                let moved = (
                    session.read.load(Ordering::Relaxed),
                    session.written.load(Ordering::Relaxed),
                );
                if tick % PROGRESS_EVERY == 0 && moved != *counts {
                    let fields = [
                        ("s", session.index.to_string()),
                        ("read", moved.0.to_string()),
                        ("written", moved.1.to_string()),
                    ];
                    emit("progress", &fields, None);
                    *counts = moved;
                }
            }
            thread::sleep(STATUS_POLL);
        }
    });
}
