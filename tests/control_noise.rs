//! The control socket receives whatever anyone sends to it: random bytes, datagrams for
//! sessions that do not exist, and datagrams that name a live session but were forged
//! without its keys. Every one must be dropped, unanswered, without disturbing anything:
//! afterwards the process's sessions still move data (which needs their acknowledgements
//! through the control socket), and the sender received nothing back.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, SECRET_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::session::Role;
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{
    bind, connect_pair, control_port, exchange_seeded, fast_config, server_addr,
};

const LIMIT: Duration = Duration::from_secs(30);
const NOISE: usize = 5000;

fn random_kind(rng: &mut Rng) -> ControlKind {
    let n = rng.next_u64() as u32;
    match rng.range(0, 7) {
        0 => ControlKind::Ack(n),
        1 => ControlKind::ReqAck {
            received: n,
            sent: n.rotate_left(16),
        },
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
        let live = client.session_id();
        let target = SocketAddr::from(([127, 0, 0, 1], control_port(&server)));

        let noise = UdpSocket::bind("127.0.0.1:0").expect("bind the noise socket");
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // Keys of some other session: what an attacker holds for its own session.
        let stranger = SessionKeys::derive(&[9; SECRET_LEN], &[9; NONCE_LEN], Role::Client);
        for i in 0..NOISE {
            let mut datagram = [0u8; 64];
            let len = if i % 2 == 0 {
                // Random bytes of random length, headers included.
                let len = rng.range(0, 64) as usize;
                for b in &mut datagram[..len] {
                    *b = rng.next_u64() as u8;
                }
                len
            } else {
                // Well-formed datagrams, tagged with the wrong key, for the live session
                // (either side of it) or a random one.
                let cid = if rng.chance(50) {
                    live
                } else {
                    rng.next_u64() as u32
                };
                let msg = ControlMessage {
                    cid,
                    from_server: rng.chance(50),
                    id: rng.next_u64() as u16,
                    kind: random_kind(&mut rng),
                };
                let mut buf = [0u8; MAX_LEN];
                let n = msg.seal(rng.next_u64(), &stranger.control.send, &mut buf);
                datagram[..n].copy_from_slice(&buf[..n]);
                n
            };
            noise
                .send_to(&datagram[..len], target)
                .expect("send a noise datagram");
        }

        // 4 MiB each way needs hundreds of acknowledgements through the control socket.
        exchange_seeded(&client, &accepted, 4 << 20, seed);

        // Nothing answered the noise. (The exchange took far longer than any answer
        // would take to arrive on loopback.)
        noise.set_nonblocking(true).expect("set_nonblocking");
        let mut buf = [0u8; 64];
        let got = noise.recv_from(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "the library answered a forged datagram: {got:?}"
        );
    });
}
