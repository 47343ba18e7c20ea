//! What a client makes of the frame that answers its HELLO ([`on_answer`]): a refusal, and
//! what it means for the session; or an ANSWER, whether it proves itself, fits the HELLO
//! and carries a possible count ([`check_answer`]); and so what becomes of the attempt's
//! connection, with the CONFIRM a resumption needs. Without I/O: the engine (or a
//! simulation) reads the frame, asks, and carries the [`Answered`] out.

use std::io;

use super::redial::Failure;
use crate::core::auth::{HandshakeKeys, MacKey, SessionKeys};
use crate::core::handshake::{Accepted, Answer, Confirm, Hello, RefusalCode};
use crate::core::WireError;
use crate::error::{Error, NotRobustReason, Refusal};

/// Why a server's count fails the session.
const IMPOSSIBLE_COUNT: &str = "the server claims to have received bytes that were never sent";

/// What a client does with an ANSWER that proved itself and fits its HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// The server opened the session on this connection: both sides start from byte 0,
    /// and no CONFIRM follows. The connection becomes the session's (the first opening's
    /// is the session's already).
    Install {
        /// What the server has received: 0.
        peer_received: u64,
    },
    /// The server resumed the session: the client proves with a CONFIRM that it holds the
    /// keys and received this ANSWER, then moves the session to the connection, resending
    /// from `peer_received`.
    ConfirmAndInstall {
        /// What the server has received, as a stream position.
        peer_received: u64,
    },
    /// The server has the session this retried key-agreement opening opened, and changed
    /// nothing for it: the client learns the CID and (from the ANSWER's agreement) the
    /// keys, ends the attempt, and resumes the session by its CID on a new connection.
    Learn,
    /// The server claims to have received bytes that were never sent: the session fails
    /// with a protocol violation (and tells the server).
    ProtocolViolation(&'static str),
}

/// Why an ANSWER ends its attempt as a cut would: nothing more is sent on the connection,
/// and the client's `Redial` goes on as after a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misanswer {
    /// Not an answer to this HELLO, or not from a server that holds the session's keys.
    Unproven,
    /// The server that holds the session's keys answered, but not what the HELLO asked:
    /// a resumption answered as an opening or for another CID, or the first opening's
    /// connection, which carries the session's bytes already, answered with anything but
    /// the session opened on it as connection 0.
    Misfit,
}

impl Misanswer {
    /// What the attempt's failure says.
    pub fn reason(self) -> &'static str {
        match self {
            Misanswer::Unproven => "the answer does not prove itself",
            Misanswer::Misfit => "the answer does not fit the hello",
        }
    }

    /// Whether a robust-tcp server that holds the session's keys answered all the same:
    /// then an opening is not talking to a stranger that hangs up, whatever becomes of
    /// this attempt (see `Redial::heard_answer`).
    pub fn server_heard(self) -> bool {
        self == Misanswer::Misfit
    }
}

/// What a client makes of `answer`, which accepted `hello`.
///
/// `server_key` is the session's server handshake key, which the ANSWER must prove;
/// `on_session` says whether the HELLO went out on the session's own connection (the
/// first opening's, on which the application writes already). `check_resume` is the
/// session's exact check of the server's count (`Session::check_resume`): the stream
/// position it stands for, `None` if impossible; it is asked only once the ANSWER proved
/// itself and fits.
///
/// # Errors
///
/// The ANSWER does not prove itself, or does not fit the HELLO.
pub fn check_answer(
    hello: &Hello,
    answer: &Accepted,
    server_key: &MacKey,
    on_session: bool,
    check_resume: impl FnOnce(u32) -> Option<u64>,
) -> Result<AnswerOutcome, Misanswer> {
    if !answer.answers(hello, server_key) {
        return Err(Misanswer::Unproven);
    }
    let fits = if answer.known {
        // Only a retried key-agreement opening finds its session known.
        hello.is_opening() && hello.key_agreement && !on_session
    } else if hello.is_opening() {
        // A retried opening may find its session opened afresh or (a lightweight one)
        // resumed (the server found it by its opening nonce); the first opening's
        // connection carries the session already, so only the session opened on it fits.
        if on_session {
            answer.opened && answer.epoch == 0
        } else {
            answer.opened || !hello.key_agreement
        }
    } else {
        !answer.opened && answer.cid == hello.cid
    };
    if !fits {
        return Err(Misanswer::Misfit);
    }
    if answer.known {
        return Ok(AnswerOutcome::Learn);
    }
    // An opened session starts at byte 0 both ways: a server that opened it has received
    // nothing.
    let peer_received = check_resume(answer.received).filter(|&n| n == 0 || !answer.opened);
    Ok(match peer_received {
        None => AnswerOutcome::ProtocolViolation(IMPOSSIBLE_COUNT),
        Some(peer_received) if answer.opened => AnswerOutcome::Install { peer_received },
        Some(peer_received) => AnswerOutcome::ConfirmAndInstall { peer_received },
    })
}

/// What a client does with the frame that answers an attempt's HELLO.
#[derive(Debug)]
pub enum Answered {
    /// The server accepted: write `confirm` first if there is one (a resumption); if the
    /// HELLO was an opening, learn the CID and control port from the ANSWER; then install
    /// the connection (the first opening's is the session's already: only let its readers
    /// proceed), resending from `peer_received`.
    Install {
        /// The ANSWER: its CID, control port and epoch.
        answer: Accepted,
        /// The CONFIRM to write before anything else, if the server resumed the session.
        confirm: Option<Confirm>,
        /// What the server has received, as a stream position.
        peer_received: u64,
        /// The session's keys, if the opening ran the key agreement: learn them with the
        /// CID.
        agreed: Option<Box<SessionKeys>>,
    },
    /// The server has the session of this retried key-agreement opening, and changed
    /// nothing: learn the CID, control port and `keys` from the ANSWER, end the attempt
    /// (nothing more on its connection; `Redial::connected`), and resume the session by
    /// its CID on a new connection.
    Learn {
        /// The ANSWER: its CID and control port.
        answer: Accepted,
        /// The session's keys.
        keys: Box<SessionKeys>,
    },
    /// The attempt failed as `failure` says; `heard`: a robust-tcp server holding the
    /// session's keys answered all the same (`Redial::heard_answer` first).
    Failed {
        /// Why, for `Redial::failed`.
        failure: Failure,
        /// Whether the server was heard.
        heard: bool,
    },
    /// Refused for good: the session fails with this error
    /// (`Session::handle_resume_refused`, and `Redial::abandoned`).
    Refused(Error),
    /// The server broke the protocol (it was heard): reset the session with this error.
    Violation(Error),
}

impl Answered {
    /// Whether the server was heard: call `Redial::heard_answer` before carrying it out.
    pub fn heard(&self) -> bool {
        match self {
            Answered::Install { .. } | Answered::Learn { .. } | Answered::Violation(_) => true,
            Answered::Failed { heard, .. } => *heard,
            Answered::Refused(_) => false,
        }
    }
}

/// What a client makes of the frame that answers `hello`: its body, or why the bytes
/// were no ANSWER frame. `keys` are the session's handshake keys, but for a key-agreement
/// opening, whose keys `agree` completes from the ANSWER (`Redial::agreed_keys`);
/// `on_session` and `check_resume` as for `check_answer`.
pub fn on_answer(
    hello: &Hello,
    frame: Result<&[u8], WireError>,
    keys: &HandshakeKeys,
    on_session: bool,
    check_resume: impl FnOnce(u32) -> Option<u64>,
    agree: impl FnOnce(&Accepted) -> Option<SessionKeys>,
) -> Answered {
    let failed = |failure| Answered::Failed {
        failure,
        heard: false,
    };
    let answer = match frame.and_then(Answer::parse) {
        Ok(Answer::Accepted(answer)) => answer,
        Ok(Answer::Refused(code)) if code.is_temporary() => return failed(Failure::Busy),
        Ok(Answer::Refused(code)) => return Answered::Refused(refusal(code, hello.is_opening())),
        Err(e) => return failed(not_robust(e)),
    };
    let unproven = || failed(Failure::Cut(io::Error::other(Misanswer::Unproven.reason())));
    let agreed = if hello.key_agreement {
        match agree(&answer) {
            Some(keys) => Some(Box::new(keys)),
            // The ANSWER does not complete the agreement: nothing can prove it.
            None => return unproven(),
        }
    } else {
        None
    };
    let keys = agreed.as_ref().map_or(keys, |k| &k.handshake);
    match check_answer(hello, &answer, &keys.server, on_session, check_resume) {
        // Nothing more is sent on this connection.
        Err(why) => Answered::Failed {
            failure: Failure::Cut(io::Error::other(why.reason())),
            heard: why.server_heard(),
        },
        Ok(AnswerOutcome::Install { peer_received }) => Answered::Install {
            answer,
            confirm: None,
            peer_received,
            agreed,
        },
        // Only a key-agreement opening fits a KNOWN answer: it has its keys.
        Ok(AnswerOutcome::Learn) => match agreed {
            Some(keys) => Answered::Learn { answer, keys },
            None => unproven(),
        },
        // Prove that we hold the session's keys and got this answer, before the server
        // moves the session to this connection.
        // Never after a key-agreement opening, which is never resumed.
        Ok(AnswerOutcome::ConfirmAndInstall { peer_received }) => Answered::Install {
            answer,
            confirm: Some(Confirm::new(hello, &answer, &keys.client)),
            peer_received,
            agreed,
        },
        Ok(AnswerOutcome::ProtocolViolation(why)) => {
            Answered::Violation(Error::ProtocolViolation(why))
        }
    }
}

/// The error a permanent refusal fails the session with, as an `opening` or not.
fn refusal(code: RefusalCode, opening: bool) -> Error {
    match (code, opening) {
        (RefusalCode::Closed, true) => Error::Refused(Refusal::ServerClosed),
        (RefusalCode::BadRequest, true) => {
            Error::ProtocolViolation("the server refused to open a session")
        }
        (RefusalCode::BadRequest, false) => {
            Error::ProtocolViolation("the server found our byte count impossible")
        }
        _ => Error::UnknownSession,
    }
}

/// The failure for bytes from a server that are not a robust-tcp answer.
fn not_robust(e: WireError) -> Failure {
    let reason = match e {
        WireError::NotRobust => NotRobustReason::ForeignBytes,
        WireError::Version(v) => NotRobustReason::Version(v),
        WireError::Malformed(_) | WireError::Forged => NotRobustReason::Malformed,
    };
    Failure::Fatal(Error::NotRobust { reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::agreement::ANSWER_PART_LEN;
    use crate::core::agreement::{self, KEY_LEN};
    use crate::core::auth::{SessionKeys, NONCE_LEN, SECRET_LEN, TAG_LEN};
    use crate::core::endpoint::redial::{NextHello, OpeningKey};
    use crate::core::handshake::HEADER_LEN;
    use crate::core::session::Role;

    const OPENING_NONCE: [u8; NONCE_LEN] = [4; NONCE_LEN];
    const SECRET: [u8; SECRET_LEN] = [3; SECRET_LEN];
    const CID: u32 = 77;

    fn keys() -> SessionKeys {
        SessionKeys::derive(&SECRET, &OPENING_NONCE, Role::Client)
    }

    fn opening(attempt: u64) -> Hello {
        let key = &keys().handshake.client;
        Hello::opening([1; NONCE_LEN], attempt, OPENING_NONCE, SECRET, key)
    }

    fn agreeing(attempt: u64) -> Hello {
        Hello::agreeing([1; NONCE_LEN], attempt, OPENING_NONCE, [5; SECRET_LEN])
    }

    fn resumption() -> Hello {
        Hello::resume(CID, [2; NONCE_LEN], 5, 1000, &keys().handshake.client)
    }

    /// The server's answer to `hello`, signed with the session's server key.
    fn answer(hello: &Hello, opened: bool, epoch: u32, received: u32) -> Accepted {
        Accepted {
            cid: CID,
            opened,
            control_port: 9000,
            client_nonce: hello.nonce,
            received,
            epoch,
            server_nonce: [6; NONCE_LEN],
            agreement: [0; ANSWER_PART_LEN],
            control_addr: None,
            tag: [0; TAG_LEN],
            known: false,
        }
        .sign(hello, &keys().handshake.server)
    }

    #[test]
    fn each_answer_that_proves_itself_gets_its_outcome() {
        let (first, retried, resuming) = (opening(0), opening(3), resumption());
        let (agreed_first, agreed_retry) = (agreeing(0), agreeing(2));
        let known = |hello: &Hello| {
            Accepted {
                known: true,
                ..answer(hello, false, 2, 0)
            }
            .sign(hello, &keys().handshake.server)
        };
        let other_cid = Accepted {
            cid: CID + 1,
            ..answer(&resuming, false, 5, 300)
        }
        .sign(&resuming, &keys().handshake.server);
        let install = Ok(AnswerOutcome::Install { peer_received: 0 });
        let confirm = |peer_received| Ok(AnswerOutcome::ConfirmAndInstall { peer_received });
        let misfit = Err(Misanswer::Misfit);
        let violation = Ok(AnswerOutcome::ProtocolViolation(IMPOSSIBLE_COUNT));
        // What the case is, the HELLO, its ANSWER, whether on the session's connection,
        // and the outcome. The session has sent 500 bytes.
        #[rustfmt::skip]
        let cases = [
            ("the first opening, opened on its connection", first, answer(&first, true, 0, 0), true, install),
            // The connection's bytes are not where the server thinks they are.
            ("the first opening, opened as another connection", first, answer(&first, true, 1, 0), true, misfit),
            ("the first opening, resumed", first, answer(&first, false, 0, 0), true, misfit),
            ("a retried opening, opened afresh", retried, answer(&retried, true, 3, 0), false, install),
            ("a retried opening, resumed", retried, answer(&retried, false, 3, 200), false, confirm(200)),
            ("a resumption, resumed", resuming, answer(&resuming, false, 5, 300), false, confirm(300)),
            ("a resumption, opened", resuming, answer(&resuming, true, 5, 0), false, misfit),
            ("a resumption, of another CID", resuming, other_cid, false, misfit),
            ("a count beyond what was sent", resuming, answer(&resuming, false, 5, 501), false, violation),
            // A session opened afresh has received nothing.
            ("an opened session with bytes", retried, answer(&retried, true, 3, 10), false, violation),
            ("a first key-agreement opening, opened on its connection", agreed_first, answer(&agreed_first, true, 0, 0), true, install),
            ("a first key-agreement opening, known", agreed_first, known(&agreed_first), true, misfit),
            ("a retried key-agreement opening, opened afresh", agreed_retry, answer(&agreed_retry, true, 2, 0), false, install),
            ("a retried key-agreement opening, known", agreed_retry, known(&agreed_retry), false, Ok(AnswerOutcome::Learn)),
            // Only a CONFIRM could prove such a retry; none is asked for.
            ("a retried key-agreement opening, resumed", agreed_retry, answer(&agreed_retry, false, 2, 0), false, misfit),
            ("a retried lightweight opening, known", retried, known(&retried), false, misfit),
            ("a resumption, known", resuming, known(&resuming), false, misfit),
        ];
        let key = &keys().handshake.server;
        for (what, hello, answer, on_session, outcome) in cases {
            let checked = check_answer(&hello, &answer, key, on_session, |n| {
                Some(u64::from(n)).filter(|&n| n <= 500)
            });
            assert_eq!(checked, outcome, "{what}");
        }
    }

    #[test]
    fn an_answer_that_does_not_prove_itself_is_unproven_and_its_count_never_looked_at() {
        let hello = resumption();
        let good = answer(&hello, false, 5, 300);
        let forged = Accepted {
            tag: [9; TAG_LEN],
            ..good
        };
        // Signed by a key other than the session's.
        let stranger = SessionKeys::derive(&[8; SECRET_LEN], &OPENING_NONCE, Role::Client);
        let foreign = good.sign(&hello, &stranger.handshake.server);
        // The answer to another HELLO of the session.
        let replayed = answer(&opening(1), false, 5, 300);
        let key = &keys().handshake.server;
        for (bad, on_session) in [
            (forged, false),
            (foreign, false),
            (replayed, false),
            (forged, true),
        ] {
            let checked = check_answer(&hello, &bad, key, on_session, |_| {
                panic!("the count of an unproven answer is looked at")
            });
            assert_eq!(checked, Err(Misanswer::Unproven));
            assert!(!Misanswer::Unproven.server_heard());
        }
        assert!(Misanswer::Misfit.server_heard());
    }

    #[test]
    fn the_count_of_an_answer_that_does_not_fit_is_never_looked_at() {
        let hello = resumption();
        let opened = answer(&hello, true, 5, 0);
        let key = &keys().handshake.server;
        let checked = check_answer(&hello, &opened, key, false, |_| {
            panic!("the count of a misfit answer is looked at")
        });
        assert_eq!(checked, Err(Misanswer::Misfit));
    }

    /// What `on_answer` makes of `frame` for `hello`, the session having sent 500 bytes.
    fn on(hello: &Hello, frame: Result<&[u8], WireError>) -> Answered {
        let keys = keys().handshake;
        let check = |n| Some(u64::from(n)).filter(|&n| n <= 500);
        on_answer(hello, frame, &keys, false, check, |_| None)
    }

    #[test]
    fn refusals_fail_the_attempt_when_temporary_and_the_session_otherwise() {
        let (opening, resuming) = (opening(2), resumption());
        let busy = Answer::Refused(RefusalCode::TooManySessions).encode();
        let failed = on(&opening, Ok(&busy[HEADER_LEN..]));
        assert!(matches!(
            failed,
            Answered::Failed {
                failure: Failure::Busy,
                heard: false
            }
        ));
        let closed = Error::Refused(Refusal::ServerClosed);
        let opening_bad = Error::ProtocolViolation("the server refused to open a session");
        let count_bad = Error::ProtocolViolation("the server found our byte count impossible");
        let cases = [
            (opening, RefusalCode::Closed, closed),
            (resuming, RefusalCode::Closed, Error::UnknownSession),
            (opening, RefusalCode::UnknownSession, Error::UnknownSession),
            (opening, RefusalCode::BadRequest, opening_bad),
            (resuming, RefusalCode::BadRequest, count_bad),
        ];
        for (hello, code, error) in cases {
            let frame = Answer::Refused(code).encode();
            let answered = on(&hello, Ok(&frame[HEADER_LEN..]));
            assert!(!answered.heard());
            let Answered::Refused(e) = answered else {
                panic!("{code:?}: {answered:?}");
            };
            assert_eq!(e, error, "{code:?}, opening {}", hello.is_opening());
        }
    }

    #[test]
    fn an_answer_is_installed_with_a_confirm_that_verifies_only_where_the_server_resumed() {
        let (retried, resuming) = (opening(3), resumption());
        let keys = keys().handshake;
        let opened = Answer::Accepted(answer(&retried, true, 3, 0)).encode();
        let answered = on(&retried, Ok(&opened[HEADER_LEN..]));
        assert!(answered.heard());
        let Answered::Install {
            confirm: None,
            peer_received: 0,
            answer,
            agreed: None,
        } = answered
        else {
            panic!("{answered:?}");
        };
        assert_eq!((answer.cid, answer.epoch), (CID, 3));
        let accepted = answer_of(&resuming);
        let resumed = Answer::Accepted(accepted).encode();
        let Answered::Install {
            confirm: Some(confirm),
            peer_received: 300,
            ..
        } = on(&resuming, Ok(&resumed[HEADER_LEN..]))
        else {
            panic!("a resumption installed without a CONFIRM");
        };
        assert!(confirm.verify(&resuming, &accepted, &keys.client));
    }

    fn answer_of(hello: &Hello) -> Accepted {
        answer(hello, false, 5, 300)
    }

    #[test]
    fn garbage_misanswers_and_impossible_counts_each_get_their_end() {
        let hello = resumption();
        let not_robust = on(&hello, Err(WireError::NotRobust));
        assert!(matches!(
            not_robust,
            Answered::Failed {
                failure: Failure::Fatal(Error::NotRobust { .. }),
                heard: false
            }
        ));
        let forged = Accepted {
            tag: [9; TAG_LEN],
            ..answer_of(&hello)
        };
        let frame = Answer::Accepted(forged).encode();
        let unproven = on(&hello, Ok(&frame[HEADER_LEN..]));
        assert!(matches!(
            unproven,
            Answered::Failed {
                failure: Failure::Cut(_),
                heard: false
            }
        ));
        let frame = Answer::Accepted(answer(&hello, true, 5, 0)).encode();
        let misfit = on(&hello, Ok(&frame[HEADER_LEN..]));
        assert!(matches!(
            misfit,
            Answered::Failed {
                failure: Failure::Cut(_),
                heard: true
            }
        ));
        let frame = Answer::Accepted(answer(&hello, false, 5, 501)).encode();
        let violation = on(&hello, Ok(&frame[HEADER_LEN..]));
        assert!(violation.heard());
        assert!(matches!(
            violation,
            Answered::Violation(Error::ProtocolViolation(_))
        ));
    }

    #[test]
    fn the_next_hello_is_a_retried_opening_or_a_resumption_with_the_count() {
        let key = &keys().handshake.client;
        let retry = NextHello {
            attempt: 3,
            opening: Some((OPENING_NONCE, OpeningKey::Secret(SECRET))),
        };
        assert_eq!(retry.hello([1; NONCE_LEN], 0, 0, key), opening(3));
        let (agreement, _) = OpeningKey::agreement([0x11; KEY_LEN], &OPENING_NONCE).unwrap();
        let retry = NextHello {
            attempt: 2,
            opening: Some((OPENING_NONCE, agreement)),
        };
        let hello = retry.hello([1; NONCE_LEN], 0, 0, key);
        let OpeningKey::Agreement { public, .. } = agreement else {
            unreachable!()
        };
        assert_eq!(
            hello,
            Hello::agreeing([1; NONCE_LEN], 2, OPENING_NONCE, public)
        );
        let resume = NextHello {
            attempt: 5,
            opening: None,
        };
        assert_eq!(resume.hello([2; NONCE_LEN], CID, 1000, key), resumption());
    }

    /// A retried key-agreement opening, its ANSWER from a server whose agreement ran with
    /// the client's key (opened, or KNOWN), and what `on_answer` makes of each.
    #[test]
    fn a_key_agreement_answer_is_checked_under_the_keys_it_agrees_on() {
        let private = [0x11; KEY_LEN];
        let Some((OpeningKey::Agreement { public, .. }, _)) =
            OpeningKey::agreement(private, &OPENING_NONCE)
        else {
            panic!("no agreement");
        };
        let hello = Hello::agreeing([1; NONCE_LEN], 2, OPENING_NONCE, public);
        let (part, server) = agreement::answer(&[0x22; KEY_LEN], &OPENING_NONCE, &public).unwrap();
        let key = &server.handshake.server;
        let opened = Accepted::accepting(&hello, CID, true, 9, 0, [6; NONCE_LEN], key)
            .agreed(part, &hello, key);
        let known = Accepted::known(&hello, CID, 9, [6; NONCE_LEN], part, key);
        let mut damaged = opened;
        damaged.agreement[0] ^= 1;
        let session = keys().handshake;
        let answer = |accepted: Accepted| {
            let frame = Answer::Accepted(accepted).encode();
            let agree = |a: &Accepted| agreement::finish(&private, &OPENING_NONCE, &a.agreement);
            on_answer(
                &hello,
                Ok(&frame[HEADER_LEN..]),
                &session,
                false,
                |_| Some(0),
                agree,
            )
        };
        let Answered::Install {
            agreed: Some(agreed),
            confirm: None,
            ..
        } = answer(opened)
        else {
            panic!("an agreed opening not installed");
        };
        let tag = server.control.send.tag(&[b"conf"]);
        assert!(agreed.control.recv.verify(&[b"conf"], &tag));
        let Answered::Learn {
            answer: learned,
            keys,
        } = answer(known)
        else {
            panic!("a known opening not learned");
        };
        assert_eq!(learned.cid, CID);
        assert!(keys.control.recv.verify(&[b"conf"], &tag));
        let failed = answer(damaged);
        assert!(
            matches!(failed, Answered::Failed { heard: false, .. }),
            "{failed:?}"
        );
    }
}
