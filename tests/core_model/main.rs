//! The protocol core driven byte by byte, without sockets or clock: two `Session`s joined
//! by a simulated TCP pipe and a lossy control channel, under a virtual clock.
//!
//! Property: whatever the interleaving of writes, reads, cuts, timer runs and control
//! datagrams lost, duplicated, reordered, replayed or forged, what each side has read is
//! always a prefix of what the other wrote, and once the network behaves again it is all
//! of it.
//!
//! The harness is in `pair.rs`; the tests, by subject, in the other modules.

mod acks;
mod buffers;
mod closing;
mod delivery;
mod liveness;
mod opening;
mod pair;
mod passivation;
mod path;
mod pending;
mod short_exchange;
