//! DKIM signing (`kumo.dkim.rsa_sha256_signer`, `kumo.dkim.ed25519_signer`,
//! `msg:dkim_sign`, the Wasm `dkim-sign` import) through the `mail-auth` crate: it does the
//! canonicalisation and the signature; this module turns KumoMTA's parameters into a
//! signer, loads keys (PEM or DER, PKCS#1 or PKCS#8), and caches signers by their
//! parameters for `ttl` seconds (300 by default, as KumoMTA does) so a message costs the
//! signature, not a key parse.

use mail_auth::common::crypto::{Ed25519Key, HashAlgorithm, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done as Ready};
use parking_lot::Mutex;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where a key comes from: a file path, or `{ key_data = "PEM..." }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum DkimKey {
    Path(PathBuf),
    Table {
        #[serde(default)]
        key_data: Option<String>,
        #[serde(default)]
        vault_mount: Option<String>,
        #[serde(default)]
        vault_path: Option<String>,
        #[serde(default)]
        vault_address: Option<String>,
        #[serde(default)]
        vault_token: Option<String>,
    },
}

/// KumoMTA's signer parameters.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignerParams {
    pub domain: String,
    pub selector: String,
    pub headers: Vec<String>,
    pub key: DkimKey,
    #[serde(default)]
    pub atps: Option<String>,
    #[serde(default)]
    pub atpsh: Option<String>,
    #[serde(default)]
    pub agent_user_identifier: Option<String>,
    /// Seconds the signature stays valid (`x=`).
    #[serde(default)]
    pub expiration: Option<u64>,
    #[serde(default)]
    pub body_length: bool,
    #[serde(default)]
    pub reporting: bool,
    #[serde(default)]
    pub header_canonicalization: Option<String>,
    #[serde(default)]
    pub body_canonicalization: Option<String>,
    /// Sign each header once more than it appears, so none can be added.
    #[serde(default)]
    pub over_sign: bool,
    /// Seconds the signer stays cached.
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// The algorithm a signer function makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

enum Inner {
    Rsa(DkimSigner<RsaKey<Sha256>, Ready>),
    Ed25519(DkimSigner<Ed25519Key, Ready>),
}

/// A ready signer.
pub struct Signer {
    inner: Inner,
    /// The signing domain, for log lines.
    pub domain: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkimSigner({})", self.domain)
    }
}

fn canonicalization(value: &Option<String>, key: &str) -> Result<Canonicalization, String> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("relaxed") => Ok(Canonicalization::Relaxed),
        Some("simple") => Ok(Canonicalization::Simple),
        Some(other) => Err(format!("{key}: {other:?} is neither \"relaxed\" nor \"simple\"")),
    }
}

/// The key's bytes.
fn key_bytes(key: &DkimKey) -> Result<Vec<u8>, String> {
    match key {
        DkimKey::Path(p) => std::fs::read(p).map_err(|e| format!("key: cannot read {}: {e}", p.display())),
        DkimKey::Table { key_data: Some(d), vault_mount: None, vault_path: None, .. } => Ok(d.clone().into_bytes()),
        DkimKey::Table { key_data: None, vault_mount: Some(_), .. } | DkimKey::Table { vault_path: Some(_), .. } => {
            Err("key: HashiCorp Vault keys are not supported by wasmta; give a file path or { key_data = ... }".into())
        }
        DkimKey::Table { .. } => Err("key: give a file path or { key_data = \"-----BEGIN ...\" }".into()),
    }
}

/// The key in DER form: PEM (`RSA PRIVATE KEY` or `PRIVATE KEY`) or DER as given.
fn key_der(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    if bytes.starts_with(b"-----") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("key: not a PEM private key: {e}"));
    }
    // DER: PKCS#8 or PKCS#1 (the mail-auth parser tells them apart by trying)
    PrivateKeyDer::try_from(bytes.to_vec()).map_err(|e| format!("key: not a DER private key: {e}"))
}

impl Signer {
    /// Builds a signer (no cache).
    pub fn build(algorithm: Algorithm, p: &SignerParams) -> Result<Signer, String> {
        if p.domain.is_empty() || p.selector.is_empty() {
            return Err("domain and selector are required".into());
        }
        if p.headers.is_empty() {
            return Err("headers: at least one header (From) must be signed".into());
        }
        let ch = canonicalization(&p.header_canonicalization, "header_canonicalization")?;
        let cb = canonicalization(&p.body_canonicalization, "body_canonicalization")?;
        // mail-auth signs every instance of a listed name and adds a listed name it did
        // not find as an empty one: listing each name twice signs one empty instance more
        let headers: Vec<String> = match p.over_sign {
            true => p.headers.iter().flat_map(|h| [h.clone(), h.clone()]).collect(),
            false => p.headers.clone(),
        };
        let atpsh = match p.atpsh.as_deref() {
            None => None,
            Some("sha256") => Some(HashAlgorithm::Sha256),
            Some("sha1") => Some(HashAlgorithm::Sha1),
            Some(other) => return Err(format!("atpsh: {other:?} is neither \"sha256\" nor \"sha1\"")),
        };
        let bytes = key_bytes(&p.key)?;
        let der = key_der(&bytes)?;
        macro_rules! finish {
            ($key:expr) => {{
                let mut s = DkimSigner::from_key($key)
                    .domain(&p.domain)
                    .selector(&p.selector)
                    .headers(headers)
                    .header_canonicalization(ch)
                    .body_canonicalization(cb)
                    .body_length(p.body_length)
                    .reporting(p.reporting);
                if let Some(a) = &p.atps {
                    s = s.atps(a);
                }
                if let Some(h) = atpsh {
                    s = s.atpsh(h);
                }
                if let Some(i) = &p.agent_user_identifier {
                    s = s.agent_user_identifier(i);
                }
                if let Some(x) = p.expiration {
                    s = s.expiration(x);
                }
                s
            }};
        }
        let inner = match algorithm {
            Algorithm::RsaSha256 => {
                let key =
                    RsaKey::<Sha256>::from_key_der(der).map_err(|e| format!("key: not an RSA private key: {e}"))?;
                Inner::Rsa(finish!(key))
            }
            Algorithm::Ed25519Sha256 => {
                let pkcs8 = match &der {
                    PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
                    _ => return Err("key: an Ed25519 key is PKCS#8 (\"-----BEGIN PRIVATE KEY-----\")".into()),
                };
                let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&pkcs8)
                    .map_err(|e| format!("key: not an Ed25519 private key: {e}"))?;
                Inner::Ed25519(finish!(key))
            }
        };
        Ok(Signer { inner, domain: p.domain.clone() })
    }

    /// The `DKIM-Signature: ...\r\n` header for `message` (its whole data).
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        let signature = match &self.inner {
            Inner::Rsa(s) => s.sign(message),
            Inner::Ed25519(s) => s.sign(message),
        };
        signature.map(|s| s.to_header()).map_err(|e| format!("dkim_sign ({}): {e}", self.domain))
    }
}

type Cache = Mutex<HashMap<(Algorithm, SignerParams), (Arc<Signer>, Instant)>>;

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The signer for these parameters: from the cache while its `ttl` lasts, else built
/// (and the key read) again. Errors name the parameter.
pub fn signer(algorithm: Algorithm, params: SignerParams) -> Result<Arc<Signer>, String> {
    let ttl = Duration::from_secs(params.ttl.unwrap_or(300));
    let key = (algorithm, params);
    if let Some((s, at)) = cache().lock().get(&key)
        && at.elapsed() < ttl
    {
        return Ok(s.clone());
    }
    let s = Arc::new(Signer::build(algorithm, &key.1)?);
    let mut c = cache().lock();
    if c.len() > 10_000 {
        c.retain(|_, (_, at)| at.elapsed() < ttl);
    }
    c.insert(key, (s.clone(), Instant::now()));
    Ok(s)
}

/// Decodes signer parameters from JSON (Lua tables and Wasm arguments both arrive so).
pub fn params(value: serde_json::Value) -> Result<SignerParams, String> {
    crate::config::decode(value)
}

/// Signs `message` and prepends the `DKIM-Signature` header, byte for byte as signed.
pub fn sign_message(message: &crate::message::Message, signer: &Signer) -> Result<(), String> {
    let data = message.data().map_err(|e| format!("dkim_sign: {e}"))?;
    let header = signer.sign(&data)?;
    message.prepend_field(header.as_bytes());
    Ok(())
}
