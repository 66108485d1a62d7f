//! A TLS client for tests that accepts any server certificate (our listeners use
//! self-signed ones): the delivery client's insecure configuration.

use rustls::pki_types::ServerName;

/// A client connection for `host` that trusts any certificate.
pub fn client(host: &str) -> rustls::ClientConnection {
    let config = wasmta::delivery::tls::client_config(true);
    rustls::ClientConnection::new(config, ServerName::try_from(host.to_string()).unwrap()).unwrap()
}
