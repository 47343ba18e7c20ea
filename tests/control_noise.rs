//! The control socket receives whatever anyone sends to it. Random bytes and well-formed
//! messages for sessions that do not exist must be dropped (or, for CLOSE, HALF_CLOSE and
//! RESET, confirmed) without disturbing anything: afterwards the process's sessions still
//! move data, which needs the control thread alive to carry their acknowledgements.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::{Config, RSocket};
use support::bounded::{join, run_bounded};
use support::rng::Rng;
use support::session::{bind, connect_pair, exchange_seeded, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);
const NOISE: usize = 5000;

/// The process's UDP control port, read from the hello a robust client sends to a plain
/// TCP listener (bytes 8 and 9 of the frame).
fn control_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = Config::default().handshake_timeout(Duration::from_millis(300));
    // The listener never answers: this connect ends with TimedOut.
    let client = thread::spawn(move || RSocket::connect_with(addr, config).map(|_| ()));
    let (mut conn, _) = listener.accept().expect("accept the robust client");
    let mut hello = [0u8; 26];
    conn.read_exact(&mut hello).expect("read the hello");
    assert_eq!(&hello[..4], b"RTCP");
    assert!(
        join(client).is_err(),
        "nobody answered, yet connect succeeded"
    );
    u16::from_be_bytes([hello[8], hello[9]])
}

fn random_kind(rng: &mut Rng) -> ControlKind {
    let n = rng.next_u64() as u32;
    match rng.range(0, 7) {
        0 => ControlKind::Ack(n),
        1 => ControlKind::ReqAck(n),
        2 => ControlKind::Close(n),
        3 => ControlKind::HalfClose(n),
        4 => ControlKind::Reset,
        5 => ControlKind::Conf,
        _ => ControlKind::Reconnect(n),
    }
}

#[test]
fn noise_on_the_control_socket_disturbs_no_session() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        let (client, accepted) = connect_pair(&server, addr, fast_config());
        let live = [client.session_id()];

        let target = SocketAddr::from(([127, 0, 0, 1], control_port()));

        let noise = UdpSocket::bind("127.0.0.1:0").expect("bind the noise socket");
        let seed = support::rng::fresh_seed();
        let mut rng = Rng::new(seed);
        for i in 0..NOISE {
            let mut datagram = [0u8; 40];
            let len = if i % 2 == 0 {
                // Random bytes of random length, headers included.
                let len = rng.range(0, 40) as usize;
                for b in &mut datagram[..len] {
                    *b = rng.next_u64() as u8;
                }
                len
            } else {
                // Well-formed messages for sessions that do not exist. (For a live
                // session they would be obeyed: control messages are not authenticated.)
                let mut cid = rng.next_u64() as u32;
                while live.contains(&cid) {
                    cid = cid.wrapping_add(1);
                }
                let msg = ControlMessage {
                    cid,
                    from_server: rng.chance(50),
                    id: rng.next_u64() as u16,
                    kind: random_kind(&mut rng),
                };
                let mut buf = [0u8; MAX_LEN];
                let n = msg.encode(&mut buf);
                datagram[..n].copy_from_slice(&buf[..n]);
                n
            };
            noise
                .send_to(&datagram[..len], target)
                .expect("send a noise datagram");
        }

        // 4 MiB each way needs hundreds of acknowledgements through the control thread.
        exchange_seeded(&client, &accepted, 4 << 20, seed);
    });
}
