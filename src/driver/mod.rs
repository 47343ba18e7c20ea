//! The thin layer of threads and sockets around the protocol core.
//!
//! - [`control`]: the process's UDP socket and control thread.
//! - [`session`]: one session's shared state, application reads and writes, and its driver
//!   thread (timers, lingering, reconnection).
//! - [`client`]: opening and reconnecting a session.
//! - [`server`]: the listener, its acceptor thread and the server's handshakes.
//! - [`frames`]: handshake frames on a TCP stream.

pub(crate) mod client;
pub(crate) mod control;
pub(crate) mod frames;
pub(crate) mod server;
pub(crate) mod session;
