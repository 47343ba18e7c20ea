//! TLS for `tests/tls.rs` and `examples/tls.rs`: a self-signed certificate made at run
//! time, the rustls configs that use it, and the orderly close.
//!
//! robust-tcp itself takes no TLS dependency: rustls and rcgen are this kit's (and rustls
//! a dev-dependency of robust-tcp, for the TLS streams). Both use the *ring* crypto provider, which builds with a C compiler alone (aws-lc-rs,
//! rustls' default, also needs cmake).

use std::io;
use std::net::Shutdown;
use std::sync::Arc;

use robust_tcp::RSocket;
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ConnectionCommon, RootCertStore, ServerConfig, SideData};

/// The name in the certificate, which the client checks.
pub const SERVER_NAME: &str = "localhost";

/// A server config with a fresh self-signed certificate for [`SERVER_NAME`], and a client
/// config that trusts that certificate and nothing else.
///
/// The key is made at run time and never leaves the process, so the repository holds no
/// private key. The client checks the server as it would on the internet (a chain to a
/// trusted root, the name, the handshake's signature); only the root is ours.
///
/// # Errors
///
/// If rcgen or rustls refuse (they should not: the inputs are fixed).
pub fn configs() -> io::Result<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(io::Error::other)?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::from(certified.signing_key);

    // An explicit provider rather than the process-wide default, which rustls picks from
    // the crate features of the build and which would panic if some other crate of the
    // build enabled aws-lc-rs as well.
    let provider = Arc::new(ring::default_provider());
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .map_err(io::Error::other)?;

    let mut roots = RootCertStore::empty();
    roots.add(cert).map_err(io::Error::other)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// [`SERVER_NAME`] as the client connection wants it.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("SERVER_NAME is a valid DNS name")
}

/// The protocol version and cipher suite `conn` negotiated, for messages (such as
/// "TLSv1_3 TLS13_AES_256_GCM_SHA384"), or "none" while the handshake runs.
pub fn negotiated<S: SideData>(conn: &ConnectionCommon<S>) -> String {
    match (conn.protocol_version(), conn.negotiated_cipher_suite()) {
        (Some(version), Some(suite)) => format!("{version:?} {:?}", suite.suite()),
        _ => "none".to_owned(),
    }
}

/// Ends our direction of a TLS connection over a robust session: the `close_notify` alert,
/// then the session's end of stream.
///
/// The alert tells the peer's rustls that the data ends here on purpose; a stream that ends
/// without it is an error there (`UnexpectedEof`), since it may be a truncation. The
/// session's end of stream comes after the alert, so that the alert is delivered.
///
/// # Errors
///
/// The session's write errors.
pub fn close<S: SideData>(conn: &mut ConnectionCommon<S>, sock: &mut RSocket) -> io::Result<()> {
    conn.send_close_notify();
    // After the handshake, this writes what is pending, the alert last, and returns without
    // reading.
    conn.complete_io(sock)?;
    sock.shutdown(Shutdown::Write)
}
