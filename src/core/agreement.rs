//! The opening's ephemeral key agreement: the Noise Protocol Framework's NN pattern
//! (`Noise_NN_25519_ChaChaPoly_SHA256`, through the `snow` crate), mapped onto the
//! opening: `-> e` is the client's ephemeral public key in its HELLO, `<- e, ee` the
//! server's ephemeral public key and Noise's tag (over an empty payload) in its ANSWER.
//! The Noise prologue binds the opening nonce, so a retried opening (same nonce, same
//! ephemeral key) agrees on the same keys. The session's four keys come from the
//! finished handshake: Noise's split as HKDF input, its handshake hash as the salt
//! ([`SessionKeys::agreed`]). Nobody who sees only the HELLO and the ANSWER can derive
//! them (X25519: that needs one of the two private keys, which never leave their side).
//!
//! Noise does not authenticate NN's parties: an attacker on the path at the opening can
//! run one agreement with each side. See `docs/SECURITY.md`.
//!
//! The private keys come in as values (the engine draws them from the operating system):
//! the core draws nothing. `snow` takes a given ephemeral key through
//! `fixed_ephemeral_key_for_testing_only`, whose name warns against a fixed key; each key
//! here is fresh and random, used for one opening (and its retries, which must send the
//! same key).

use std::fmt;

use snow::{Builder, HandshakeState};

use super::auth::{Nonce, SessionKeys};
use super::session::Role;

/// Length of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;
/// Length of the server's part of the agreement in its ANSWER: its ephemeral public key
/// and Noise's 16-byte tag.
pub const ANSWER_PART_LEN: usize = KEY_LEN + 16;

/// An ephemeral X25519 private key, drawn for one opening.
pub type PrivateKey = [u8; KEY_LEN];
/// An ephemeral X25519 public key: the client's, in its opening HELLO.
pub type PublicKey = [u8; KEY_LEN];
/// The server's part of the agreement (Noise's second message), in its ANSWER.
pub type AnswerPart = [u8; ANSWER_PART_LEN];

/// The Noise protocol name.
const PARAMS: &str = "Noise_NN_25519_ChaChaPoly_SHA256";
/// The start of the prologue; the opening nonce follows.
const PROLOGUE: &[u8] = b"robust-tcp v5 opening";

/// A Noise NN handshake state for `role`, its ephemeral key `private`, bound to the
/// opening nonce `opening_nonce`; `None` only if `snow` refuses its own parameters.
fn handshake(private: &PrivateKey, opening_nonce: &Nonce, role: Role) -> Option<HandshakeState> {
    let params = PARAMS.parse().ok()?;
    let mut prologue = [0u8; PROLOGUE.len() + std::mem::size_of::<Nonce>()];
    let (label, nonce) = prologue.split_at_mut(PROLOGUE.len());
    label.copy_from_slice(PROLOGUE);
    nonce.copy_from_slice(opening_nonce);
    let builder = Builder::new(params)
        .prologue(&prologue)
        .fixed_ephemeral_key_for_testing_only(private);
    match role {
        Role::Client => builder.build_initiator(),
        Role::Server => builder.build_responder(),
    }
    .ok()
}

/// The client's first message (`-> e`, an empty payload): its ephemeral public key.
fn client_message(state: &mut HandshakeState) -> Option<PublicKey> {
    // `snow` asks for room for a tag after the payload even where none is written (there
    // is no key yet): a buffer of the second message's length.
    let mut message = [0u8; ANSWER_PART_LEN];
    let written = state.write_message(&[], &mut message).ok()?;
    let mut public = [0u8; KEY_LEN];
    public.copy_from_slice(message.get(..written).filter(|m| m.len() == KEY_LEN)?);
    Some(public)
}

/// The session's keys, for `role`, from a finished handshake.
fn keys(mut state: HandshakeState, role: Role) -> Option<SessionKeys> {
    if !state.is_handshake_finished() {
        return None;
    }
    let (initiator, responder) = state.dangerously_get_raw_split();
    let mut split = [0u8; 2 * KEY_LEN];
    let (first, second) = split.split_at_mut(KEY_LEN);
    first.copy_from_slice(&initiator);
    second.copy_from_slice(&responder);
    Some(SessionKeys::agreed(
        state.get_handshake_hash(),
        &split,
        role,
    ))
}

/// The client's side of the agreement once its first message is made: the Noise state
/// that reads the server's part. Kept from the HELLO to the ANSWER, it spares finishing
/// the derivation of the client's public key a second time (an X25519 base-point
/// multiplication, about 15 µs here).
pub struct ClientHalf(Box<HandshakeState>);

impl fmt::Debug for ClientHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state holds the private key: nothing of it is shown.
        f.write_str("ClientHalf(..)")
    }
}

impl ClientHalf {
    /// [`finish`], with the state made for the HELLO.
    pub fn finish(mut self, part: &AnswerPart) -> Option<SessionKeys> {
        self.0.read_message(part, &mut []).ok()?;
        keys(*self.0, Role::Client)
    }
}

/// The client's ephemeral public key for its opening HELLO, from its private key (the
/// same for every retry of the opening), and the state that finishes the agreement from
/// the server's part. `None` only if `snow` fails.
pub fn client_start(
    private: &PrivateKey,
    opening_nonce: &Nonce,
) -> Option<(PublicKey, ClientHalf)> {
    let mut state = handshake(private, opening_nonce, Role::Client)?;
    let public = client_message(&mut state)?;
    Some((public, ClientHalf(Box::new(state))))
}

/// The client's ephemeral public key alone (see [`client_start`]).
pub fn client_public(private: &PrivateKey, opening_nonce: &Nonce) -> Option<PublicKey> {
    client_start(private, opening_nonce).map(|(public, _)| public)
}

/// The server's side of the agreement with the client whose opening HELLO (opening nonce
/// `opening_nonce`) carried `client`: its part of the ANSWER, with its ephemeral key
/// `private`, and the session's keys. `None` if the client's key is refused.
pub fn answer(
    private: &PrivateKey,
    opening_nonce: &Nonce,
    client: &PublicKey,
) -> Option<(AnswerPart, SessionKeys)> {
    let mut state = handshake(private, opening_nonce, Role::Server)?;
    state.read_message(client, &mut []).ok()?;
    let mut part = [0u8; ANSWER_PART_LEN];
    let written = state.write_message(&[], &mut part).ok()?;
    if written != ANSWER_PART_LEN {
        return None;
    }
    Some((part, keys(state, Role::Server)?))
}

/// The client's side: the session's keys, from its ephemeral key `private` and the
/// server's part of an ANSWER; `None` if the part does not complete the agreement (not
/// the answer of a server that received this client's key with this opening nonce).
pub fn finish(
    private: &PrivateKey,
    opening_nonce: &Nonce,
    part: &AnswerPart,
) -> Option<SessionKeys> {
    client_start(private, opening_nonce)?.1.finish(part)
}

#[cfg(test)]
mod tests;
