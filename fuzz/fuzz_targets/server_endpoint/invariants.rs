//! What the harness checks: a KNOWN verdict against the session it names, and after every
//! operation, the listener's counts against its limits and the harness's own records.

use super::*;

impl Server {
    /// A KNOWN answer to `hello`: only for a key-agreement retry of an open session's
    /// opening whose client has not shown that it knows the CID; it changes nothing.
    pub(super) fn known(&self, answer: &Accepted, hello: Hello) {
        let open = self
            .sessions
            .iter()
            .find(|o| !o.ended && o.cid == answer.cid);
        let Some(open) = open else {
            panic!("a KNOWN answer for CID {}, which is not open", answer.cid);
        };
        assert!(
            hello.is_opening() && hello.key_agreement && hello.opening_nonce == open.opening,
            "a HELLO that is no retry of session {}'s opening knows it: {hello:?}",
            answer.cid
        );
        assert!(
            !Presence::of(&open.session, self.now).client_knows_cid,
            "a retried opening knows session {}, whose client knows it",
            answer.cid
        );
        assert!(answer.known && answer.answers(&hello, &open.keys.handshake.server));
    }

    pub(super) fn check(&self) {
        let live: Vec<&Open> = self.sessions.iter().filter(|o| !o.ended).collect();
        assert_eq!(self.endpoint.session_count(), live.len());
        assert!(live.len() <= self.limits.max_sessions, "too many sessions");
        for o in &live {
            let same = live.iter().filter(|p| p.client == o.client).count();
            assert!(
                same <= self.limits.max_sessions_per_address,
                "{same} sessions from {}",
                o.client
            );
        }
        assert_eq!(self.endpoint.handshake_count(), self.handshakes.len());
        assert!(self.handshakes.len() <= self.limits.max_handshakes);
        // Admission keeps room for the tombstone of every session (a session that ends
        // leaves at most one), so both together stay within twice the cap; the tombstones
        // alone may outnumber max_sessions (corpus/tombstones_past_max_sessions did).
        assert!(live.len() + self.endpoint.tombstone_count() <= 2 * self.limits.max_sessions);
    }
}
