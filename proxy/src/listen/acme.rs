//! What the listeners serve for ACME (RFC 8555): the certificate obtained
//! for an https listener's `tls.acme`, and the answers to the CA's
//! challenges while an order is open (`http-01` on http listeners, RFC 8555
//! §8.3; `tls-alpn-01` on the https listener, RFC 8737). The ACME client
//! that fills these lives in the node (`app/src/acme.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of `tls-alpn-01` (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where `http-01` answers are asked for (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// A certificate obtained by ACME, as served.
#[derive(Debug)]
pub struct AcmeCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's `notBefore` and `notAfter`, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The file it is kept in (the expiry metric's `certificate` label).
    pub path: PathBuf,
}

/// One https listener's `tls.acme`: the certificate being served (the old
/// one stays until a new one is in place) and the `tls-alpn-01` answers of
/// an open order.
#[derive(Debug)]
pub struct AcmeSlot {
    pub listener: String,
    pub config: edge_config::Acme,
    current: ArcSwapOption<AcmeCert>,
    /// Name → the self-signed challenge certificate (RFC 8737 §3).
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl AcmeSlot {
    pub fn new(listener: &str, config: edge_config::Acme) -> Self {
        Self {
            listener: listener.to_string(),
            config,
            current: ArcSwapOption::empty(),
            alpn: RwLock::new(HashMap::new()),
        }
    }

    /// The certificate served now, if one has been obtained or loaded.
    pub fn current(&self) -> Option<Arc<AcmeCert>> {
        self.current.load_full()
    }

    /// Serves `cert` from the next handshake on.
    pub fn install(&self, cert: AcmeCert) {
        self.current.store(Some(Arc::new(cert)));
    }

    /// Whether `name` (lower case, no trailing dot) is one of the domains.
    pub fn covers(&self, name: &str) -> bool {
        self.config.domains.iter().any(|d| d == name)
    }

    /// The `tls-alpn-01` certificate for `name` while its challenge is open.
    pub fn challenge_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.read().get(name).cloned()
    }

    pub fn set_challenge_cert(&self, name: &str, key: Arc<CertifiedKey>) {
        self.alpn.write().insert(name.to_string(), key);
    }

    pub fn clear_challenge_cert(&self, name: &str) {
        self.alpn.write().remove(name);
    }
}

/// `http-01` answers of open orders (token → key authorization), served by
/// every http listener before routing, so a redirect-to-https route does not
/// hide them.
#[derive(Debug, Default)]
pub struct Http01Answers {
    tokens: RwLock<HashMap<String, String>>,
}

impl Http01Answers {
    /// The key authorization for a request path, if it asks for an open token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        // RFC 8555 §8.3: the token is base64url; anything else is not ours.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        self.tokens.read().get(token).cloned()
    }

    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.tokens
            .write()
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove(&self, token: &str) {
        self.tokens.write().remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_only_open_base64url_tokens_under_the_well_known_path() {
        let a = Http01Answers::default();
        a.insert("tok_EN-1", "tok_EN-1.thumb");
        assert_eq!(
            a.answer("/.well-known/acme-challenge/tok_EN-1").as_deref(),
            Some("tok_EN-1.thumb")
        );
        for path in [
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/other",
            "/.well-known/acme-challenge/tok_EN-1/",
            "/.well-known/acme-challenge/tok_EN-1.x",
            "/.well-known/acme-challenge/tok%5FEN-1",
            "/.well-known/acme-challenge/../acme-challenge/tok_EN-1",
            "/.well-known/ACME-challenge/tok_EN-1",
            "/x/.well-known/acme-challenge/tok_EN-1",
            "/",
        ] {
            assert_eq!(a.answer(path), None, "{path}");
        }
        a.remove("tok_EN-1");
        assert_eq!(a.answer("/.well-known/acme-challenge/tok_EN-1"), None);
    }
}
