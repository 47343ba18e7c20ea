//! How each end checks the other's key in the TLS handshake: the client pins the
//! server's (`--server-key`, or `known_servers` on first use), the server looks the
//! client's up in its `--authorized-keys` file. Both check the handshake's signature by
//! that key; names, dates and WebPKI play no part.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::{lock, TlsFailed};
use crate::keys::{self, Fingerprint};
/// A refusal of the peer's key, for rustls to carry to the handshake's error (and, as a
/// `certificate_unknown` alert, to the peer).
pub(super) fn refuse(why: String) -> rustls::Error {
    let why = OtherError(Arc::new(TlsFailed(why)));
    rustls::Error::InvalidCertificate(CertificateError::Other(why))
}

/// The fingerprint of a peer's certificate, or the error for one that is none.
pub(super) fn fingerprint(cert: &CertificateDer<'_>) -> Result<Fingerprint, rustls::Error> {
    Fingerprint::of_cert(cert).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))
}

/// The handshake-signature half of a certificate verifier, the same for both ends: TLS
/// 1.3's, by the key of the certificate that was checked, with the provider's algorithms
/// (in the verifier's `algorithms` field). Both configs allow TLS 1.3 only, so rustls
/// never asks for a TLS 1.2 signature.
macro_rules! signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not offered".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// How the client knows the server's key.
#[derive(Debug)]
pub(super) enum Pin {
    /// `--server-key`.
    Given(Fingerprint),
    /// `known_servers` in the state directory, under the `--server` name: trusted and
    /// written there on first use.
    Known {
        file: PathBuf,
        name: String,
        /// Held from reading the file to writing it, so that sessions opened at once on
        /// first use write one line.
        writing: Mutex<()>,
    },
}

impl Pin {
    /// Whether `seen` is the server's key, or why not (the line the client logs).
    fn check(&self, seen: Fingerprint) -> Result<(), String> {
        /// How to tell a key changed on purpose from an attack.
        const CHECK: &str = "check `rtcp fingerprint --server` on the server";
        match self {
            Pin::Given(pinned) if seen == *pinned => Ok(()),
            Pin::Given(pinned) => Err(format!(
                "the server's key is {seen}, not {pinned} as --server-key says: {CHECK} \
                 (if it prints another key, someone may be intercepting the connection)"
            )),
            Pin::Known {
                file,
                name,
                writing,
            } => {
                let _writing = lock(writing);
                let Some(pinned) = keys::known_server(file, name)? else {
                    keys::remember_server(file, name, seen).map_err(|e| {
                        format!("cannot record {name}'s key in {}: {e}", file.display())
                    })?;
                    log::warn!(
                        "trusting {name}'s key {seen} on first use (recorded in {}): check it \
                         against `rtcp fingerprint --server` on the server",
                        file.display()
                    );
                    return Ok(());
                };
                if seen == pinned {
                    return Ok(());
                }
                Err(format!(
                    "the server {name}'s key changed: it is {seen}, and {} pins {pinned}; \
                     {CHECK}: if it prints the new key, delete {name}'s line in that file; if \
                     not, someone may be intercepting the connection",
                    file.display()
                ))
            }
        }
    }
}

/// The client's check of the server: its key's fingerprint, pinned; and the handshake's
/// signature, by that key.
#[derive(Debug)]
pub(super) struct PinnedServer {
    pub(super) pin: Pin,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.pin.check(fingerprint(end_entity)?).map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

/// The server's check of a client: its key's fingerprint in the `--authorized-keys` file,
/// read again for each session (an edit takes effect at the next one); and the
/// handshake's signature, by that key.
#[derive(Debug)]
pub(super) struct AuthorizedClients {
    pub(super) file: PathBuf,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AuthorizedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity)?;
        let listed = keys::read_authorized(&self.file).map_err(refuse)?;
        if !listed.contains(&seen) {
            return Err(refuse(format!(
                "client key {seen} is not in {}: add it there to admit this client",
                self.file.display()
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    signatures!();
}
