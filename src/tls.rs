//! Server-side TLS for STARTTLS (and HTTPS): the configured certificate and key (file or
//! inline PEM) or, when none is given, a self-signed certificate for the listener's hostname.

use crate::config::listener::{KeySource, ListenerSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

fn pem_bytes(source: &KeySource, what: &str) -> Result<Vec<u8>, String> {
    match source {
        KeySource::File(path) => std::fs::read(path).map_err(|e| format!("{what} {path}: {e}")),
        KeySource::Data { key_data } => Ok(key_data.as_bytes().to_vec()),
        KeySource::Vault { .. } => Err(format!("{what}: Vault key sources are not supported yet")),
    }
}

/// Builds the acceptor for a listener's settings.
pub fn acceptor(settings: &ListenerSettings) -> Result<TlsAcceptor, String> {
    acceptor_for(&settings.hostname, settings.tls_certificate.as_ref(), settings.tls_private_key.as_ref())
}

/// Builds an acceptor from a certificate and key, or a self-signed certificate for
/// `hostname` when both are absent.
pub fn acceptor_for(
    hostname: &str,
    certificate: Option<&KeySource>,
    private_key: Option<&KeySource>,
) -> Result<TlsAcceptor, String> {
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match (certificate, private_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = pem_bytes(cert, "tls_certificate")?;
            let key_pem = pem_bytes(key, "tls_private_key")?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("tls_private_key: {e}"))?;
            (certs, key)
        }
        (None, None) => {
            let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
                .map_err(|e| format!("generating a self-signed certificate: {e}"))?;
            let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| e.to_string())?;
            (vec![generated.cert.der().clone()], key)
        }
        _ => return Err("tls_certificate and tls_private_key must be given together".into()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
