//! The decoders take arbitrary bytes from the network: they must return errors, never
//! panic, and agree with the encoders on everything they accept.

use proptest::prelude::*;
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{
    Answer, Confirm, FrameHeader, Hello, RefusalCode, HEADER_LEN,
};

fn control_kind() -> impl Strategy<Value = ControlKind> {
    prop_oneof![
        any::<u32>().prop_map(ControlKind::Ack),
        any::<u32>().prop_map(ControlKind::ReqAck),
        any::<u32>().prop_map(ControlKind::Close),
        any::<u32>().prop_map(ControlKind::HalfClose),
        Just(ControlKind::Reset),
        Just(ControlKind::Conf),
        any::<u32>().prop_map(ControlKind::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(msg) = ControlMessage::parse(&bytes) {
            // Whatever decodes re-encodes to the same bytes.
            let mut buf = [0; MAX_LEN];
            let n = msg.encode(&mut buf);
            prop_assert_eq!(&buf[..n], &bytes[..]);
        }
        if let Some(header) = bytes.get(..HEADER_LEN).and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok()) {
            let _ = FrameHeader::parse(header);
        }
        let _ = Hello::parse(&bytes);
        let _ = Answer::parse(&bytes);
        let _ = Confirm::parse(&bytes);
    }

    #[test]
    fn control_messages_round_trip(cid in any::<u32>(), from_server in any::<bool>(), id in any::<u16>(), kind in control_kind()) {
        let msg = ControlMessage { cid, from_server, id, kind };
        let mut buf = [0; MAX_LEN];
        let n = msg.encode(&mut buf);
        prop_assert_eq!(ControlMessage::parse(&buf[..n]), Ok(msg));
    }

    #[test]
    fn handshake_frames_round_trip(port in any::<u16>(), cid in any::<u32>(), token in any::<u64>(), received in any::<u32>(), epoch in any::<u32>()) {
        let hello = Hello { control_port: port, cid, token, received };
        let frame = hello.encode();
        let header = FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
        prop_assert_eq!(header.body_len, frame.len() - HEADER_LEN);
        prop_assert_eq!(Hello::parse(&frame[HEADER_LEN..]), Ok(hello));

        let answer = if cid == 0 {
            Answer::Refused(RefusalCode::TooManySessions)
        } else {
            Answer::Accepted { cid, token, control_port: port, received, epoch }
        };
        let frame = answer.encode();
        prop_assert_eq!(Answer::parse(&frame[HEADER_LEN..]), Ok(answer));
    }
}
