//! The line format in which peers report to the harness on stdout:
//! `@<name> key=value key=value ... msg=free text to the end of the line`.
//!
//! Values hold no spaces; `msg`, when present, comes last and takes the rest of the line,
//! so error messages travel unquoted. Lines that do not start with `@` are logged only.

use std::fmt::Write as _;
use std::time::Instant;

/// One reported event, stamped by the harness when it read the line (peers and harness
/// share no clock type, and a line is read within microseconds of being written).
#[derive(Clone, Debug)]
pub struct Event {
    /// What happened: `connected`, `progress`, `state`, `eof`...
    pub name: String,
    /// The `key=value` fields, in order.
    pub fields: Vec<(String, String)>,
    /// The free text after `msg=`, if any.
    pub msg: Option<String>,
    /// When the harness read it.
    pub at: Instant,
}

impl Event {
    /// Parses `line`, or `None` if it is not an event line.
    pub fn parse(line: &str, at: Instant) -> Option<Event> {
        let rest = line.strip_prefix('@')?;
        let (head, msg) = match rest.find(" msg=") {
            Some(i) => (&rest[..i], Some(rest[i + 5..].to_string())),
            None => (rest, None),
        };
        let mut words = head.split_whitespace();
        let name = words.next()?.to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Event {
            name,
            fields,
            msg,
            at,
        })
    }

    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of field `key` as a number.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// Whether this is event `name` about session `s` (every event about a session has
    /// an `s` field).
    pub fn is(&self, name: &str, s: usize) -> bool {
        self.name == name && self.num("s") == Some(s as u64)
    }
}

/// Formats an event line (without the newline).
pub fn line(name: &str, fields: &[(&str, String)], msg: Option<&str>) -> String {
    let mut out = format!("@{name}");
    for (k, v) in fields {
        // A space would split the value; none of ours has one, but stay parseable.
        let _ = write!(out, " {k}={}", v.replace(char::is_whitespace, "_"));
    }
    if let Some(msg) = msg {
        let _ = write!(out, " msg={}", msg.replace('\n', " | "));
    }
    out
}
