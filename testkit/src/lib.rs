//! The test kit of robust-tcp: what its integration tests, benches, examples, the netns
//! test and rtcp's tests share, as one crate they take as a dev-dependency rather than
//! files each compiles in by path.
//!
//! One module per concern: [`bounded`] watchdogs, [`rng`] seeds, [`payload`]
//! deterministic payloads checked byte by byte, [`proxy`] the seeded fault-injecting TCP
//! proxy, [`session`] helpers around robust sessions, [`check`] assertions on results,
//! [`child`] child processes of a binary that re-runs itself, [`paired`] paired rounds of TCP against robust-tcp and their tables, [`raw`] a client that speaks the handshake frame by frame, [`capture`] a packet capture
//! on loopback, [`netns`] real networks in network namespaces, and [`tls`] the TLS configs
//! with a certificate made at run time; [`attacker`] the off-path attacker of the attack
//! tests.
#![deny(missing_docs)]

// Records what the AF_PACKET capture saw: Linux only.
#[cfg(target_os = "linux")]
pub mod attacker;
pub mod bounded;
// An AF_PACKET socket: Linux only.
#[cfg(target_os = "linux")]
pub mod capture;
pub mod check;
pub mod child;
pub mod netns;
pub mod paired;
pub mod payload;
pub mod proxy;
pub mod raw;
pub mod rng;
pub mod session;
pub mod tls;
