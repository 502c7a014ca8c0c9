//! TLS for `https` listeners: certificates chosen by SNI (exact names, then
//! the `tls.acme` domains, then `*.` wildcards, then the default), TLS 1.2
//! and 1.3 only, ALPN h2 and http/1.1 (and `acme-tls/1` while `tls.acme`
//! uses `tls-alpn-01`). Files are loaded before serving, so a bad
//! certificate is a build error and the running listener keeps its old one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use pingora_core::listeners::tls::Acceptor;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::acme::{AcmeSlot, ACME_TLS_ALPN};
use crate::error::BuildError;

/// Picks the certificate for a client's SNI.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// `tls.acme`: its domains, and the default when no file is.
    acme: Option<Arc<AcmeSlot>>,
}

impl SniResolver {
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let acme = || {
            self.acme
                .as_ref()
                .and_then(|a| a.current())
                .map(|c| c.key.clone())
        };
        if let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) {
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if self.acme.as_ref().is_some_and(|a| a.covers(&name)) {
                // None until the first certificate is obtained: the
                // handshake fails rather than showing another name's.
                return acme();
            }
            // `*.example.com` covers one label: a.example.com, not a.b.example.com.
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(&format!(".{rest}")) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone().or_else(acme)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a CA validating `tls-alpn-01` offers `acme-tls/1`
        // and nothing else; on a listener that answers that challenge it
        // gets the challenge certificate for the name, or no handshake at
        // all. Any other client goes on as usual.
        let answers_alpn = self
            .acme
            .as_ref()
            .is_some_and(|a| a.config.challenge == edge_config::AcmeChallenge::TlsAlpn01);
        if answers_alpn && hello.alpn().is_some_and(only_acme_tls) {
            let name = hello
                .server_name()?
                .trim_end_matches('.')
                .to_ascii_lowercase();
            return self.acme.as_ref()?.challenge_cert(&name);
        }
        self.pick(hello.server_name())
    }
}

/// Whether an ALPN offer is `acme-tls/1` alone.
fn only_acme_tls<'a>(mut protocols: impl Iterator<Item = &'a [u8]>) -> bool {
    protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
}

/// A certificate chain and its key from one PEM text (as `tls.acme` keeps
/// them), checked to belong together, with the leaf's validity (`notBefore`,
/// `notAfter`, Unix seconds) and DNS names.
pub fn certified_key_from_pem(
    pem: &[u8],
) -> Result<(Arc<CertifiedKey>, i64, i64, Vec<String>), String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    let leaf = chain.first().ok_or("no CERTIFICATE in the file")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("not PEM: {e}"))?
        .ok_or("no PRIVATE KEY in the file")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unsupported key: {e}"))?;
    let certified = CertifiedKey::new(chain.clone(), signer);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok((
        Arc::new(certified),
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        names,
    ))
}

fn cert_error(listener: &str, path: &Path, why: impl Into<String>) -> BuildError {
    BuildError::Certificate {
        listener: listener.to_string(),
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_keys(
    listener: &str,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, BuildError> {
    let cert_pem = std::fs::read(cert).map_err(|e| cert_error(listener, cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(listener, cert, format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(listener, cert, "no CERTIFICATE in the file"));
    }
    let key_pem = std::fs::read(key).map_err(|e| cert_error(listener, key, e.to_string()))?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| cert_error(listener, key, format!("not PEM: {e}")))?
        .ok_or_else(|| cert_error(listener, key, "no PRIVATE KEY in the file"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| cert_error(listener, key, format!("unsupported key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        cert_error(
            listener,
            key,
            format!("does not match {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

/// When the first (leaf) certificate of a PEM chain expires: its
/// `notAfter`, Unix seconds. `None` if the file holds no readable X.509
/// certificate.
pub fn not_after(cert_pem: &[u8]) -> Option<i64> {
    let der = rustls_pemfile::certs(&mut &cert_pem[..]).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Every https listener's certificate files with their expiry:
/// (listener, certificate path, `notAfter` in Unix seconds). Reads the files.
pub fn expiries(config: &edge_config::Config) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let edge_config::ListenerKind::Https(https) = &l.kind else {
            continue;
        };
        for c in &https.certificates {
            if let Some(t) = std::fs::read(&c.cert).ok().and_then(|pem| not_after(&pem)) {
                out.push((l.name.clone(), c.cert.display().to_string(), t));
            }
        }
    }
    out
}

/// A listener's TLS setup, ready to accept.
pub struct TlsSettings {
    pub acceptor: Acceptor,
}

impl TlsSettings {
    /// Loads every certificate of an https listener; `acme` is the slot of
    /// its `tls.acme`, whose certificate is read at each handshake.
    pub fn build(
        listener: &str,
        https: &edge_config::HttpsListener,
        acme: Option<Arc<AcmeSlot>>,
    ) -> Result<Self, BuildError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let alpn_challenge = acme
            .as_ref()
            .is_some_and(|a| a.config.challenge == edge_config::AcmeChallenge::TlsAlpn01);
        let mut resolver = SniResolver {
            acme,
            ..Default::default()
        };
        for c in &https.certificates {
            let key = load_certified_keys(listener, &c.cert, &c.key)?;
            for name in &c.server_names {
                match name.strip_prefix('*') {
                    Some(suffix) => resolver.wildcard.insert(suffix.to_string(), key.clone()),
                    None => resolver.exact.insert(name.clone(), key.clone()),
                };
            }
            if c.default {
                resolver.default = Some(key.clone());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS12, &TLS13])
            .map_err(|e| BuildError::Certificate {
                listener: listener.to_string(),
                path: Default::default(),
                why: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = if https.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        if alpn_challenge {
            // Only a validating CA offers it (RFC 8737 §6.2).
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        Ok(Self {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_offer_of_acme_tls_alone_is_a_validating_ca() {
        let offer = |list: &[&'static [u8]]| only_acme_tls(list.iter().copied());
        assert!(offer(&[ACME_TLS_ALPN]));
        assert!(!offer(&[]));
        assert!(!offer(&[b"h2", ACME_TLS_ALPN]));
        assert!(!offer(&[ACME_TLS_ALPN, b"http/1.1"]));
        assert!(!offer(&[b"acme-tls/2"]));
        assert!(!offer(&[b"ACME-TLS/1"]));
    }
}
