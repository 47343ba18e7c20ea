//! The decoders take arbitrary bytes from the network: they must return errors, never
//! panic, and agree with the encoders on everything they accept.

use proptest::prelude::*;
use robust_tcp::protocol::agreement::ANSWER_PART_LEN;
use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, SECRET_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{
    Accepted, Answer, Confirm, FrameHeader, Hello, RefusalCode, HEADER_LEN,
};
use robust_tcp::protocol::session::Role;

fn control_kind() -> impl Strategy<Value = ControlKind> {
    prop_oneof![
        any::<u32>().prop_map(ControlKind::Ack),
        any::<(u32, u32)>().prop_map(|(received, sent)| ControlKind::ReqAck { received, sent }),
        any::<u32>().prop_map(ControlKind::Close),
        any::<u32>().prop_map(ControlKind::HalfClose),
        Just(ControlKind::Reset),
        Just(ControlKind::Conf),
        any::<u32>().prop_map(ControlKind::Reconnect),
        any::<u64>().prop_map(ControlKind::Challenge),
        any::<u64>().prop_map(ControlKind::Response),
        any::<u32>().prop_map(ControlKind::Passivate),
    ]
}

fn keys(role: Role) -> SessionKeys {
    SessionKeys::derive(&[5; SECRET_LEN], &[6; NONCE_LEN], role)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        // Without the key, nothing authenticates.
        prop_assert!(ControlMessage::open(&bytes, &keys(Role::Server).control.recv).is_err());
        let _ = ControlMessage::route(&bytes);
        if let Some(header) = bytes.get(..HEADER_LEN).and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok()) {
            let _ = FrameHeader::parse(header);
        }
        let _ = Hello::parse(&bytes);
        let _ = Answer::parse(&bytes);
        let _ = Confirm::parse(&bytes);
    }

    #[test]
    fn control_messages_round_trip(cid in any::<u32>(), from_server in any::<bool>(), id in any::<u16>(), pn in any::<u64>(), kind in control_kind()) {
        let msg = ControlMessage { cid, from_server, id, kind };
        let mut buf = [0; MAX_LEN];
        let n = msg.seal(pn, &keys(Role::Client).control.send, &mut buf);
        prop_assert_eq!(ControlMessage::open(&buf[..n], &keys(Role::Server).control.recv), Ok((pn, msg)));
    }

    #[test]
    fn authentic_datagrams_of_any_shape_decode_exactly_or_are_refused(
        header in any::<[u8; 8]>(),
        code in 0u8..12,
        flags in 0u8..5,
        counts in proptest::collection::vec(any::<u8>(), 0..4 * 3 + 3),
    ) {
        // Tagged with the right key, so the decoding after the tag is what is tested: any
        // type, flags and number of counts (the lengths of this version and others).
        let mut body = header.to_vec();
        body[4] = code;
        body[5] = flags;
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&counts);
        let send = keys(Role::Client).control.send;
        let mut datagram = body.clone();
        datagram.extend_from_slice(&send.tag(&[&body]));
        if let Ok((pn, msg)) = ControlMessage::open(&datagram, &keys(Role::Server).control.recv) {
            let mut buf = [0; MAX_LEN];
            let n = msg.seal(pn, &send, &mut buf);
            prop_assert_eq!(&buf[..n], &datagram[..]);
        }
    }

    #[test]
    fn handshake_frames_round_trip(cid in any::<u32>(), nonce in any::<[u8; NONCE_LEN]>(), attempt in any::<u64>(), received in any::<u32>(), epoch in any::<u32>(), port in any::<u16>(), opened in any::<bool>(), secret in any::<[u8; SECRET_LEN]>()) {
        let keys = keys(Role::Client);
        let hello = if cid == 0 {
            Hello::opening(nonce, attempt, [6; NONCE_LEN], secret, &keys.handshake.client)
        } else {
            Hello::resume(cid, nonce, attempt, received, &keys.handshake.client)
        };
        let frame = hello.encode();
        let header = FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
        prop_assert_eq!(header.body_len, frame.len() - HEADER_LEN);
        prop_assert_eq!(Hello::parse(&frame[HEADER_LEN..]), Ok(hello));
        prop_assert!(hello.verify(&keys.handshake.client));

        let answer = if cid == 0 {
            Answer::Refused(RefusalCode::TooManySessions)
        } else {
            let accepted = Accepted {
                cid,
                opened,
                control_port: port,
                client_nonce: nonce,
                received,
                epoch,
                server_nonce: nonce,
                // Either flag, never both; any agreement bytes.
                known: !opened && attempt % 2 == 1,
                agreement: [attempt as u8; ANSWER_PART_LEN],
                control_addr: None,
                tag: [0; 16],
            }
            .sign(&hello, &keys.handshake.server);
            prop_assert!(accepted.answers(&hello, &keys.handshake.server));
            let confirm = Confirm::new(&hello, &accepted, &keys.handshake.client);
            prop_assert_eq!(Confirm::parse(&confirm.encode()[HEADER_LEN..]), Ok(confirm));
            Answer::Accepted(accepted)
        };
        let frame = answer.encode();
        prop_assert_eq!(Answer::parse(&frame[HEADER_LEN..]), Ok(answer));
    }
}
