//! rtcp: robust connections for programs that cannot be recompiled.
fn main() {}
