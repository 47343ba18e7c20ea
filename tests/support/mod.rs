//! Shared helpers for the integration tests: a seeded fault-injecting TCP proxy, a
//! watchdog, deterministic payloads, a few session helpers, and network namespaces for
//! tests of real networks (`netns.rs`, used by `tests/netns/`).
//!
//! Each test file includes this module with `mod support;` and uses only part of it; rustc
//! compiles the module once per test crate and would warn about whatever that crate leaves
//! unused, hence the crate-wide allowance below. (Items are reached by path, e.g.
//! `support::proxy::FaultProxy`, rather than re-exported: an unused re-export is an
//! `unused_imports` warning that `dead_code` does not cover.)
#![allow(dead_code)]

pub mod bounded;
pub mod check;
pub mod netns;
pub mod payload;
pub mod proxy;
pub mod raw;
pub mod rng;
pub mod session;
// `tls.rs` is not listed: it needs rustls and rcgen, dev-dependencies of robust-tcp alone,
// while rtcp's tests include this module too. `tests/tls.rs` and `examples/tls.rs` include
// it by path, beside this module.
