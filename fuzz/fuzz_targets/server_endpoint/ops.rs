//! The input's operations and their decoding: a hand decoder, so that a seed can be
//! written byte by byte (`examples/make_seeds.rs`) and every byte string is some input.

use robust_tcp::protocol::auth::TAG_LEN;
use robust_tcp::protocol::control::MAX_LEN;

/// The fuzz input, read from the front; a byte past its end is 0.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes, fewer at the end of the input.
    pub fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// One byte of a frame's body flipped (`xor` 0: none), to make near misses.
#[derive(Clone, Copy, Debug)]
pub struct Flip {
    pub at: u8,
    pub xor: u8,
}

impl Flip {
    pub fn decode(input: &mut Input) -> Self {
        Flip {
            at: input.byte(),
            xor: input.byte(),
        }
    }

    pub fn apply(self, body: &mut [u8]) {
        if let Some(b) = body.get_mut(usize::from(self.at) % body.len().max(1)) {
            *b ^= self.xor;
        }
    }
}

/// One operation of the input (opcode: its first byte modulo the number of kinds).
#[derive(Debug)]
pub enum Op {
    /// An opening HELLO from address `from`, of opening `opening` (its secret and nonce),
    /// attempt `attempt`, saying it received `received`; new sessions `welcome` or not.
    Open {
        from: u8,
        opening: u8,
        attempt: u8,
        received: u8,
        welcome: bool,
        flip: Flip,
    },
    /// A reconnection HELLO for the harness's session `session` (or, past the last, CID
    /// `session`), tagged with its key.
    Resume {
        from: u8,
        session: u8,
        attempt: u8,
        received: u16,
        flip: Flip,
    },
    /// A HELLO body as it is.
    RawHello { from: u8, body: Vec<u8> },
    /// One of the latest HELLOs again.
    Replay { from: u8, which: u8 },
    /// The CONFIRM of a resumption waiting for one.
    Confirm { which: u8, flip: Flip },
    /// A control datagram to session `session`, tagged with its client's key or not.
    Datagram {
        session: u8,
        tagged: bool,
        port: u8,
        body: Vec<u8>,
    },
    /// Session `session`'s connection fails.
    Cut { session: u8 },
    /// Session `session` is reset (its application aborts it).
    Reset { session: u8 },
    /// A connection is accepted: its handshake starts.
    HandshakeStarted,
    /// Handshake `which` reads bytes that are no robust-tcp frame.
    HandshakeGarbage { which: u8 },
    /// Handshake `which` fails (its connection, or its deadline).
    HandshakeFailed { which: u8 },
    /// Time passes: `ms` times 10 milliseconds.
    Advance { ms: u16 },
}

impl Op {
    pub fn decode(input: &mut Input) -> Option<Self> {
        let (&code, _) = input.0.split_first()?;
        input.byte();
        Some(match code % 12 {
            0 => Op::Open {
                from: input.byte(),
                opening: input.byte(),
                attempt: input.byte(),
                received: input.byte(),
                welcome: !input.byte().is_multiple_of(8),
                flip: Flip::decode(input),
            },
            1 => Op::Resume {
                from: input.byte(),
                session: input.byte(),
                attempt: input.byte(),
                received: input.u16(),
                flip: Flip::decode(input),
            },
            2 => {
                let from = input.byte();
                let len = usize::from(input.byte());
                let body = input.bytes(len).to_vec();
                Op::RawHello { from, body }
            }
            3 => Op::Replay {
                from: input.byte(),
                which: input.byte(),
            },
            4 => Op::Confirm {
                which: input.byte(),
                flip: Flip::decode(input),
            },
            5 => {
                let (session, flags) = (input.byte(), input.byte());
                let len = usize::from(input.byte()) % (MAX_LEN - TAG_LEN + 1);
                Op::Datagram {
                    session,
                    tagged: flags & 1 == 1,
                    port: flags >> 1,
                    body: input.bytes(len).to_vec(),
                }
            }
            6 => Op::Cut {
                session: input.byte(),
            },
            7 => Op::Reset {
                session: input.byte(),
            },
            8 => Op::HandshakeStarted,
            9 => Op::HandshakeGarbage {
                which: input.byte(),
            },
            10 => Op::HandshakeFailed {
                which: input.byte(),
            },
            _ => Op::Advance { ms: input.u16() },
        })
    }
}
