//! TLS 1.3 (rustls) over each tunnelled session, and the keys that authenticate both
//! ends: the client pins the server's key (`--server-key`, or `known_servers` on first
//! use), the server admits the clients its `--authorized-keys` lists.
//!
//! TLS runs over the `RSocket`, whose byte stream survives cuts, so it never sees one. The
//! request header and reply travel inside TLS: the target's name and the server's reasons
//! are private too. Certificates are self-signed and checked by their key's fingerprint
//! alone (no names, no dates, no WebPKI): a key is trusted because it is listed, as in ssh.
//!
//! A relay reads and writes a [`Channel`] from two threads at once, and a rustls
//! connection is one state for both directions: it sits behind a mutex held only to
//! encrypt or decrypt, never while the session blocks. The session is read without the
//! lock, and written under a second lock ([`Tls::sending`]) that keeps the TLS records in
//! order; a reader whose decryption queues bytes for the peer (an alert, a key update
//! response) sends them itself if no writer is sending, or leaves them to the writer,
//! which sends whatever is queued before it lets go of the lock.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use robust_tcp::RSocket;
use rustls::client::Resumption;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection, ServerConfig,
    ServerConnection,
};

use self::verify::{AuthorizedClients, Pin, PinnedServer};
use crate::keys::{self, Fingerprint, Identity};
use crate::request::HEADER_LIMIT;
use crate::Fatal;

/// Bytes read from the session at once: as much as a relay's chunk.
const READ_SIZE: usize = 64 * 1024;

/// What a TLS record starts with: a handshake (0x16) or an alert (0x15), then the
/// version's major number (3). The first bytes of a plaintext rtcp are "RTCP".
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, ..])
}

/// The one line both kinds of mismatch end with.
pub const MISMATCH_FIX: &str =
    "run both ends with TLS (the default), or both with --insecure-plaintext";

/// How this end runs its sessions: TLS as a client or as a server, or plaintext.
#[derive(Clone)]
pub enum Security {
    /// `--insecure-plaintext`: the session's bytes as they are.
    Plaintext,
    /// `rtcp client` and `rtcp connect`.
    Client(Arc<ClientConfig>, Fingerprint),
    /// `rtcp server`.
    Server(Arc<ServerConfig>, Fingerprint),
}

impl Security {
    /// The client's: its key from `state`, and the server's key pinned as `pin` says.
    pub fn client(state: PathBuf, server: &str, pin: Option<Fingerprint>) -> Result<Self, Fatal> {
        let identity = Identity::load_or_make(&state, keys::Role::Client)?;
        let pin = match pin {
            Some(fingerprint) => Pin::Given(fingerprint),
            None => Pin::Known {
                file: state.join("known_servers"),
                name: server.to_owned(),
                writing: Mutex::new(()),
            },
        };
        let verifier = PinnedServer {
            pin,
            algorithms: algorithms(),
        };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(vec![identity.cert], identity.key)
            .map_err(tls_setup)?;
        // The name in the ClientHello would travel in clear, and nobody checks it.
        config.enable_sni = false;
        // Each session checks the server's key afresh; resumption would skip that.
        config.resumption = Resumption::disabled();
        log::info!("this client's key is {}", identity.fingerprint);
        Ok(Security::Client(Arc::new(config), identity.fingerprint))
    }

    /// The server's: its key from `state`; the clients `authorized` lists, or any client.
    pub fn server(state: PathBuf, authorized: Option<PathBuf>) -> Result<Self, Fatal> {
        let identity = Identity::load_or_make(&state, keys::Role::Server)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_setup)?;
        let builder = match authorized {
            Some(file) => {
                // A mistake in the file is better found now than at the first client.
                keys::read_authorized(&file).map_err(Fatal)?;
                let verifier = AuthorizedClients {
                    file,
                    algorithms: algorithms(),
                };
                builder.with_client_cert_verifier(Arc::new(verifier))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![identity.cert], identity.key)
            .map_err(tls_setup)?;
        // No resumption (each session is authenticated afresh), so no tickets to send.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        log::info!("this server's key is {}", identity.fingerprint);
        Ok(Security::Server(Arc::new(config), identity.fingerprint))
    }

    /// Runs the TLS handshake on `session` (within [`HEADER_LIMIT`]), or nothing for
    /// plaintext, and returns the channel the tunnel's bytes go through. The error says
    /// why in one line: a key refused (by either end), or a peer that does not speak
    /// TLS.
    pub fn secure(&self, session: RSocket) -> io::Result<Channel> {
        let (conn, own) = match self {
            Security::Plaintext => {
                return Ok(Channel {
                    session: Arc::new(session),
                    tls: None,
                })
            }
            Security::Client(config, own) => {
                let name = ServerName::try_from("rtcp").map_err(io::Error::other)?;
                let conn = ClientConnection::new(Arc::clone(config), name);
                (Connection::from(conn.map_err(io::Error::other)?), own)
            }
            Security::Server(config, own) => {
                let conn = ServerConnection::new(Arc::clone(config));
                (Connection::from(conn.map_err(io::Error::other)?), own)
            }
        };
        let tls = Tls {
            conn: Mutex::new(conn),
            sending: Mutex::new(Vec::new()),
            incoming: Mutex::new(Incoming::default()),
            own: *own,
            client: matches!(self, Security::Client(..)),
        };
        let _ = session.set_read_timeout(Some(HEADER_LIMIT));
        let shook = tls.handshake(&session);
        let _ = session.set_read_timeout(None);
        shook?;
        Ok(Channel {
            session: Arc::new(session),
            tls: Some(tls),
        })
    }
}

/// A rustls configuration that the fixed inputs should never fail.
fn tls_setup(e: rustls::Error) -> Fatal {
    Fatal(format!("cannot set TLS up: {e}"))
}

/// *ring*, with AES-128-GCM first: as safe as AES-256 here and cheaper per byte, which
/// is most of what TLS costs a tunnel (both ends offer the same order).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The signature algorithms of the provider, for the handshake's signatures.
fn algorithms() -> WebPkiSupportedAlgorithms {
    ring::default_provider().signature_verification_algorithms
}

/// Why a TLS handshake or read failed, in one line: the error inside the `io::Error`s
/// of [`Security::secure`] and of a channel's reads, and, inside rustls's error, this end's
/// refusal of the peer's key.
#[derive(Debug)]
pub struct TlsFailed(String);

impl fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailed {}

/// A locked mutex, poisoned or not: a panic in another thread is a bug that thread
/// reports; the state behind these locks stays consistent across one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bytes of a tunnelled session: the session's own, or TLS over it. Every method
/// takes `&self`, so that one thread reads while another writes.
pub struct Channel {
    session: Arc<RSocket>,
    tls: Option<Tls>,
}

impl Channel {
    /// The session under the channel (its id, status, time limits, reset).
    pub fn session(&self) -> &Arc<RSocket> {
        &self.session
    }

    /// The key the client proved in the TLS handshake, at the server's end of a channel
    /// whose server authorizes clients (`--authorized-keys`); `None` otherwise.
    pub fn client_key(&self) -> Option<Fingerprint> {
        let tls = self.tls.as_ref().filter(|tls| !tls.client)?;
        let conn = lock(&tls.conn);
        Fingerprint::of_cert(conn.peer_certificates()?.first()?)
    }
}

impl Read for &Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&*self.session).read(buf),
            Some(tls) => tls.read(&self.session, buf),
        }
    }
}

impl Write for &Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&*self.session).write(buf),
            Some(tls) => tls.write_all(&self.session, buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.session).flush()
    }
}

impl crate::relay::Socket for Channel {
    /// TLS's `close_notify` first, so that the peer tells our end of stream from a
    /// truncation, then the session's end of stream.
    fn shutdown_write(&self) {
        if let Some(tls) = &self.tls {
            let sending = lock(&tls.sending);
            let mut conn = lock(&tls.conn);
            conn.send_close_notify();
            // A failure here fails the session, which the other direction reports.
            drop(tls.send(&self.session, sending, conn));
        }
        // Never fails today (the Result mirrors TcpStream's).
        let _ = self.session.shutdown(Shutdown::Write);
    }

    fn reset(&self) {
        let _ = self.session.abort();
    }
}

/// The session's bytes read and not yet taken by rustls.
struct Incoming {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The session ended (rustls has been told).
    eof: bool,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            buf: vec![0; READ_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// A TLS connection over a session; see the module's documentation for the locks.
struct Tls {
    conn: Mutex<Connection>,
    /// Held while TLS bytes are written to the session, so that records go in order; the
    /// buffer they are taken into.
    sending: Mutex<Vec<u8>>,
    /// Held by the reader.
    incoming: Mutex<Incoming>,
    /// This end's key, for the line that says the peer refused it.
    own: Fingerprint,
    client: bool,
}

impl Tls {
    /// The handshake, run before the relay starts (one thread). rustls's `complete_io`
    /// writes what it has and reads until the handshake is done, or fails after sending
    /// the alert that tells the peer why.
    fn handshake(&self, session: &RSocket) -> io::Result<()> {
        let mut io = FirstBytes {
            session,
            first: Vec::new(),
        };
        let mut conn = lock(&self.conn);
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut io) {
                // complete_io's last write on failure passes one of the queued records
                // (with TLS 1.3's compatibility ChangeCipherSpec first, not the alert):
                // the rest, the alert that tells the peer why, goes now.
                while conn.wants_write() {
                    if conn.write_tls(&mut io).is_err() {
                        break;
                    }
                }
                return Err(self.explain(e, &io.first));
            }
        }
        // From now on every write is sent at once, and the writer's buffer bounds it.
        conn.set_buffer_limit(None);
        Ok(())
    }

    /// The line for a failed handshake or TLS read: a peer that speaks plaintext, a peer
    /// that refused our key, or rustls's words (which carry our own refusal's line).
    fn explain(&self, e: io::Error, first: &[u8]) -> io::Error {
        let tls = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        let line = match tls {
            Some(_) if first.starts_with(b"RTCP") => {
                let (peer, this) = if self.client {
                    ("server", "client")
                } else {
                    ("client", "server")
                };
                format!(
                    "the {peer} speaks plaintext rtcp (--insecure-plaintext) and this {this} \
                     TLS: {MISMATCH_FIX}"
                )
            }
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)) => {
                if self.client {
                    format!(
                        "the server refused this client's key {}: add it to the server's \
                         --authorized-keys file (`rtcp fingerprint` prints it)",
                        self.own
                    )
                } else {
                    format!(
                        "the client refused this server's key {}: it has another key \
                         pinned for this server (its known_servers or --server-key)",
                        self.own
                    )
                }
            }
            Some(rustls::Error::InvalidCertificate(CertificateError::Other(why))) => {
                why.to_string()
            }
            Some(other) => format!("TLS failed: {other}"),
            None => return e,
        };
        io::Error::new(e.kind(), TlsFailed(line))
    }

    /// Reads plaintext: what rustls has decrypted, or, if nothing, more of the session
    /// (without the connection's lock, so that the writer goes on meanwhile).
    fn read(&self, session: &RSocket, buf: &mut [u8]) -> io::Result<usize> {
        let mut incoming = lock(&self.incoming);
        loop {
            let mut conn = lock(&self.conn);
            // rustls takes at most its buffers' worth at once: the rest waits until the
            // plaintext is read.
            let mut refused = None;
            while incoming.start < incoming.end {
                let Incoming {
                    buf: raw,
                    start,
                    end,
                    ..
                } = &mut *incoming;
                let mut unread = &raw[*start..*end];
                match conn.read_tls(&mut unread) {
                    // Nothing taken: the peer's close_notify came, and what follows it is
                    // past the end of the stream.
                    Ok(0) => {
                        *start = *end;
                        break;
                    }
                    Ok(n) => *start += n,
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
                conn = self.process(session, conn)?;
            }
            if incoming.eof {
                // Tells rustls the stream ended: without a close_notify, a truncation.
                let _ = conn.read_tls(&mut io::empty());
            }
            conn = self.process(session, conn)?;
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if let Some(e) = refused {
                return Err(e);
            }
            drop(conn);
            let n = Read::read(&mut { session }, &mut incoming.buf)?;
            incoming.start = 0;
            incoming.end = n;
            incoming.eof = n == 0;
        }
    }

    /// Decrypts what rustls holds, and sends what that queued for the peer unless a
    /// writer is sending (it sends it before it stops). On failure, the alert for the
    /// peer goes too, if it can.
    fn process<'a>(
        &'a self,
        session: &RSocket,
        mut conn: MutexGuard<'a, Connection>,
    ) -> io::Result<MutexGuard<'a, Connection>> {
        let failed = conn.process_new_packets().err();
        if conn.wants_write() {
            let sending = match self.sending.try_lock() {
                Ok(sending) => Some(sending),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(sending) = sending {
                conn = self.send(session, sending, conn)?;
            }
        }
        match failed {
            Some(e) => Err(self.explain(io::Error::new(io::ErrorKind::InvalidData, e), &[])),
            None => Ok(conn),
        }
    }

    /// Encrypts all of `buf` and sends it.
    fn write_all(&self, session: &RSocket, buf: &[u8]) -> io::Result<()> {
        let sending = lock(&self.sending);
        let mut conn = lock(&self.conn);
        // Without a buffer limit (set after the handshake), rustls takes all of it.
        conn.writer().write_all(buf)?;
        self.send(session, sending, conn).map(drop)
    }

    /// Sends what rustls has queued, until nothing is, writing to the session without the
    /// connection's lock. `sending` is let go of while the connection is locked and has
    /// nothing queued: a reader that queues bytes later finds it free and sends them.
    fn send<'a>(
        &'a self,
        session: &RSocket,
        mut sending: MutexGuard<'_, Vec<u8>>,
        mut conn: MutexGuard<'a, Connection>,
    ) -> io::Result<MutexGuard<'a, Connection>> {
        loop {
            sending.clear();
            while conn.wants_write() {
                conn.write_tls(&mut *sending)?;
            }
            if sending.is_empty() {
                drop(sending);
                return Ok(conn);
            }
            drop(conn);
            let mut session = session;
            session.write_all(&sending)?;
            conn = lock(&self.conn);
        }
    }
}

/// The session, as rustls's handshake reads and writes it, keeping the first bytes the
/// peer sent: "RTCP" there means a plaintext rtcp.
struct FirstBytes<'a> {
    session: &'a RSocket,
    first: Vec<u8>,
}

impl Read for FirstBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = Read::read(&mut { self.session }, buf)?;
        let wanted = 4usize.saturating_sub(self.first.len()).min(n);
        self.first.extend_from_slice(&buf[..wanted]);
        Ok(n)
    }
}

impl Write for FirstBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut session = self.session;
        session.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut session = self.session;
        session.flush()
    }
}

mod verify;

#[cfg(test)]
mod tests;
