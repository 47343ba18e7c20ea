//! rtcp's keys: each end's own key, made on first use in its state directory; the
//! fingerprints that name keys; and the files that list them, the server's
//! authorized_keys (the clients it admits) and the client's known_servers (the server
//! keys it pinned on first use).
//!
//! A fingerprint is `SHA256:` and the SHA-256 of the key's SubjectPublicKeyInfo (DER) in
//! lowercase hex: it names the key, not the certificate, which each end makes afresh at
//! every start from its key.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::Fatal;

/// What a fingerprint's text starts with, as in ssh's.
const PREFIX: &str = "SHA256:";

/// The name in both ends' self-signed certificates. Nobody checks it (keys are pinned by
/// fingerprint) and SNI is off, so it says nothing about the server.
const CERT_NAME: &str = "rtcp";

/// A key's fingerprint: the SHA-256 of its SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the key a certificate (DER) carries, or `None` if it is not a
    /// certificate.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Option<Fingerprint> {
        let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
        let spki = parsed.subject_public_key_info();
        Some(Fingerprint(Sha256::digest(spki.as_ref()).into()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a key fingerprint (SHA256: and 64 hex digits)");
        let hex = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
            // ASCII, so every pair is two characters.
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// Which end a key belongs to: its file's name in the state directory.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// `rtcp server`'s key, `server.key`.
    Server,
    /// `rtcp client`'s and `rtcp connect`'s key, `client.key`.
    Client,
}

/// One end's key, its self-signed certificate, and the key's fingerprint.
pub struct Identity {
    /// The certificate presented in the TLS handshake.
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The key's fingerprint.
    pub fingerprint: Fingerprint,
}

impl Identity {
    /// Loads `role`'s key from `state`, or makes it there (Ed25519, file mode 0600, the
    /// directory 0700) if there is none yet, and makes its certificate.
    pub fn load_or_make(state: &Path, role: Role) -> Result<Identity, Fatal> {
        let path = state.join(match role {
            Role::Server => "server.key",
            Role::Client => "client.key",
        });
        let fail = |what: &str, e: &dyn fmt::Display| {
            Fatal(format!("cannot {what} the key {}: {e}", path.display()))
        };
        let der = match fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = make_key(state, &path).map_err(|e| fail("make", &e))?;
                log::info!("made a new key in {}", path.display());
                made
            }
            Err(e) => return Err(fail("read", &e)),
        };
        let pair = rcgen::KeyPair::try_from(der.as_slice()).map_err(|e| fail("read", &e))?;
        let cert = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
            .and_then(|params| params.self_signed(&pair))
            .map_err(|e| fail("use", &e))?
            .der()
            .clone();
        let fingerprint = Fingerprint::of_cert(&cert)
            .ok_or_else(|| fail("use", &"rcgen made a certificate webpki cannot parse"))?;
        Ok(Identity {
            cert,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            fingerprint,
        })
    }
}

/// Makes a key at `path` (in `state`, made if missing) and returns it. The file is
/// created, never replaced: of two processes making it at once, the second fails.
fn make_key(state: &Path, path: &Path) -> io::Result<Vec<u8>> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)?;
    let der = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(io::Error::other)?
        .serialize_der();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&der)?;
    file.sync_all()?;
    Ok(der)
}

/// The state directory when none is given: systemd's `$STATE_DIRECTORY` (its first
/// entry), else `$XDG_STATE_HOME/rtcp`, else `~/.local/state/rtcp`.
pub fn default_state_dir() -> Result<PathBuf, Fatal> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = var("STATE_DIRECTORY") {
        if let Some(first) = std::env::split_paths(&dirs).next() {
            return Ok(first);
        }
    }
    if let Some(state) = var("XDG_STATE_HOME") {
        return Ok(PathBuf::from(state).join("rtcp"));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".local/state/rtcp"))
        .ok_or_else(|| Fatal("no --state-dir, and neither STATE_DIRECTORY nor HOME is set".into()))
}

/// The meaningful lines of a list file: without `#` comments and blank lines, each split
/// into its first word and the rest, with its line number.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        Some((i + 1, first, rest.trim()))
    })
}

/// Reads an authorized_keys file: one fingerprint per line, then an optional comment
/// (the client's name); `#` lines are comments. A line that is no fingerprint is an
/// error, so that a mistake in the file is not silently a refused client.
pub fn read_authorized(path: &Path) -> Result<Vec<Fingerprint>, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    entries(&text)
        .map(|(line, first, _)| {
            first
                .parse()
                .map_err(|e| format!("{}:{line}: {e}", path.display()))
        })
        .collect()
}

/// The fingerprint `known_servers` (at `path`) holds for the server `name`, if any:
/// lines of `NAME FINGERPRINT`, `#` lines are comments. A missing file holds nothing.
pub fn known_server(path: &Path, name: &str) -> Result<Option<Fingerprint>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let found = entries(&text).find(|(_, first, _)| *first == name);
    found
        .map(|(line, _, fingerprint)| {
            fingerprint
                .parse()
                .map_err(|e| format!("{}:{line}: {e}", path.display()))
        })
        .transpose()
}

/// Appends `name FINGERPRINT` to `known_servers` at `path` (made, mode 0600, if missing).
pub fn remember_server(path: &Path, name: &str, fingerprint: Fingerprint) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{name} {fingerprint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_back_and_refuse_anything_else() {
        let fingerprint = Fingerprint([0xab; 32]);
        let text = fingerprint.to_string();
        assert_eq!(text, format!("SHA256:{}", "ab".repeat(32)));
        assert_eq!(text.parse(), Ok(fingerprint));
        for bad in [
            "",
            "SHA256:",
            "sha256:abab",
            &format!("SHA256:{}", "ab".repeat(31)),
            &format!("SHA256:{}g", "ab".repeat(31)),
            &format!("SHA256:{}é", "a".repeat(62)),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_made_once_private_and_named_by_their_fingerprint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let made = Identity::load_or_make(&state, Role::Client).unwrap();
        let again = Identity::load_or_make(&state, Role::Client).unwrap();
        assert_eq!(made.fingerprint, again.fingerprint);
        let server = Identity::load_or_make(&state, Role::Server).unwrap();
        assert_ne!(made.fingerprint, server.fingerprint);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join("client.key")), 0o600);
        assert_eq!(mode(&state), 0o700);
    }

    #[test]
    fn lists_skip_comments_and_refuse_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, format!("# admins\n\n{a} laptop\n  {b}\n")).unwrap();
        assert_eq!(read_authorized(&authorized), Ok(vec![a, b]));
        fs::write(&authorized, format!("{a}\nssh-ed25519 AAAA\n")).unwrap();
        let e = read_authorized(&authorized).unwrap_err();
        assert!(e.contains("authorized_keys:2: \"ssh-ed25519\""), "{e}");

        let known = dir.path().join("sub/known_servers");
        assert_eq!(known_server(&known, "db:7000"), Ok(None));
        remember_server(&known, "db:7000", a).unwrap();
        remember_server(&known, "other:7000", b).unwrap();
        assert_eq!(known_server(&known, "db:7000"), Ok(Some(a)));
        assert_eq!(known_server(&known, "other:7000"), Ok(Some(b)));
        assert_eq!(known_server(&known, "db"), Ok(None));
    }
}
