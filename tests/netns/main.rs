//! Real networks in network namespaces (issue 8, "Tests: real networks in namespaces"): a
//! client and a server process, each in its own namespace, with a router namespace
//! between them that NATs, filters, blackholes, forgets its mappings or sees the client
//! change address, while data moves both ways and every byte is checked.
//!
//! This target has its own `main` (`harness = false` in Cargo.toml): the library has one
//! engine and one UDP socket per process, bound in the namespace the process runs in, so
//! each end must be a process of its own. The binary is both the harness and the peers:
//! `netns peer <role> ...` (see `peer.rs`) is one end, started by the harness with `ip
//! netns exec`; anything else runs the scenarios (`scenarios.rs`) and prints libtest's
//! lines. Run one scenario by a part of its name:
//!
//! ```text
//! cargo test --test netns -- roam           # roam_add_then_remove and roam_remove_then_add
//! cargo test --test netns -- --exact udp_blocked --nocapture
//! cargo test --test netns -- --list
//! ```
//!
//! It needs root, `ip`, `iptables` and `conntrack`; without them it skips with a message,
//! unless `CI` is set, when it fails.

mod events;
mod harness;
mod peer;
mod runner;
mod scenarios;

/// A peer when the first argument is `peer`; the scenarios otherwise.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("peer") {
        peer::main(&args[1..]);
    }
    std::process::exit(runner::run(&args));
}
