//! What a client makes of an ANSWER that accepted its HELLO: whether the ANSWER proves
//! itself, whether it fits the HELLO, and whether the server's count is possible; and so
//! what becomes of the attempt's connection. Without I/O: the engine (or a simulation)
//! reads the ANSWER, asks [`check_answer`] and carries the outcome out.

use crate::core::auth::MacKey;
use crate::core::handshake::{Accepted, Hello};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::agreement::ANSWER_PART_LEN;
    use crate::core::auth::{SessionKeys, NONCE_LEN, SECRET_LEN, TAG_LEN};
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
}
