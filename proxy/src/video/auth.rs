//! Signed URLs and cookies: a token of HMAC-SHA256 over the path (or a
//! prefix of it), the expiry and optionally the client's address, as nginx
//! `secure_link`, CloudFront signed URLs/cookies and Akamai tokens do.
//!
//! ```text
//! ?exp=<unix seconds>&token=<key id>.<n>.<mac>
//! mac = base64url(HMAC-SHA256(secret, "edge-url-auth-v1\n" path[..n] "\n" exp "\n" client))
//! ```
//!
//! `n` is how many bytes of the (normalized) path the token covers: all of
//! it under `scope = "path"`, a prefix under `"path-prefix"`, the path up
//! to and including a `/` under `"manifest-dir"` (one token for a
//! manifest, its renditions and segments). `client` is the address
//! (`bind = ["client_ip"]`) or empty. The same pair may come as cookies
//! of the same names. Several keys are accepted at once (rotation); the
//! key id picks the secret. Comparison is constant-time (`hmac`'s
//! `verify_slice`, on `subtle`).

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edge_config::{AuthScope, UrlAuth};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"edge-url-auth-v1\n";

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// Why a request was refused. `code()` is what the client sees; the
/// `Display` text (which may name a key id) goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("the token covers {covered} bytes of the path, which {why}")]
    OutOfScope { covered: usize, why: &'static str },
    #[error("signature mismatch (tampered, another path, another client or a removed key)")]
    BadSignature,
    #[error("expired {0} s ago")]
    Expired(u64),
}

impl Denied {
    /// The code in the 403's body and the metric label: `missing`,
    /// `malformed`, `invalid` or `expired`. A wrong key, scope or
    /// signature are all `invalid`: the client learns no more.
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed(_) => "malformed",
            Denied::UnknownKey(_) | Denied::OutOfScope { .. } | Denied::BadSignature => "invalid",
            Denied::Expired(_) => "expired",
        }
    }
}

/// A route's compiled `auth`: settings and secrets by key id.
pub struct UrlSigner {
    pub config: UrlAuth,
    /// (key id, secret), in config order: the first signs.
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("UrlSigner")
            .field("keys", &ids)
            .field("scope", &self.config.scope)
            .finish()
    }
}

impl UrlSigner {
    /// Reads each key's secret with `secret(env name)`. Errors name the
    /// key and variable: unset, or shorter than [`MIN_SECRET`] bytes.
    pub fn new(
        config: &UrlAuth,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<UrlSigner, String> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            let value = secret(&k.secret_env).ok_or_else(|| {
                format!(
                    "signing key {:?}: environment variable {} is not set",
                    k.id, k.secret_env
                )
            })?;
            if value.len() < MIN_SECRET {
                return Err(format!(
                    "signing key {:?}: ${} holds fewer than {MIN_SECRET} bytes",
                    k.id, k.secret_env
                ));
            }
            keys.push((k.id.clone(), value.into_bytes()));
        }
        Ok(UrlSigner {
            config: config.clone(),
            keys,
        })
    }

    /// From the process environment.
    pub fn from_env(config: &UrlAuth) -> Result<UrlSigner, String> {
        Self::new(config, |name| std::env::var(name).ok())
    }

    /// The key ids, signing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// `None` only if `hmac` refused the key, which HMAC never does.
    fn mac(
        secret: &[u8],
        covered: &[u8],
        expires: u64,
        client: Option<IpAddr>,
    ) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(secret).ok()?;
        mac.update(DOMAIN);
        mac.update(covered);
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"\n");
        if let Some(ip) = client {
            mac.update(canonical_ip(ip).to_string().as_bytes());
        }
        Some(mac)
    }

    /// How much of `path` a token for it covers under this route's scope;
    /// `prefix` (for `path-prefix`) narrows it to a prefix of `path`.
    /// Errors when `prefix` is not a prefix of `path`.
    pub fn covered<'p>(&self, path: &'p str, prefix: Option<&str>) -> Result<&'p str, String> {
        match (self.config.scope, prefix) {
            (AuthScope::Path, None) => Ok(path),
            (AuthScope::Path, Some(_)) => {
                Err("this route's tokens cover one path (scope = \"path\"): no prefix".into())
            }
            (AuthScope::PathPrefix, None) => Ok(path),
            (AuthScope::PathPrefix, Some(p)) => match path.strip_prefix(p) {
                Some(_) if !p.is_empty() => Ok(&path[..p.len()]),
                _ => Err(format!("{p:?} is not a prefix of {path:?}")),
            },
            (AuthScope::ManifestDir, None) => match path.rfind('/') {
                Some(i) => Ok(&path[..=i]),
                None => Err(format!("{path:?} has no directory")),
            },
            (AuthScope::ManifestDir, Some(_)) => Err(
                "this route's tokens cover the manifest's directory (scope = \"manifest-dir\"): no prefix"
                    .into(),
            ),
        }
    }

    /// A token for `covered` (from [`UrlSigner::covered`]) expiring at
    /// `expires` (Unix seconds), signed with `key` or the first key.
    pub fn sign(
        &self,
        covered: &str,
        expires: u64,
        client: Option<IpAddr>,
        key: Option<&str>,
    ) -> Result<String, String> {
        let (id, secret) = match key {
            Some(k) => self
                .keys
                .iter()
                .find(|(id, _)| id == k)
                .ok_or_else(|| format!("no key {k:?} on this route"))?,
            None => self.keys.first().ok_or("this route has no key")?,
        };
        let client = if self.config.bind_client_ip {
            Some(client.ok_or("this route binds tokens to the client's address: give one")?)
        } else {
            None
        };
        let tag = Self::mac(secret, covered.as_bytes(), expires, client)
            .ok_or("the key was refused")?
            .finalize()
            .into_bytes();
        Ok(format!(
            "{id}.{}.{}",
            covered.len(),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The query string (`exp=…&token=…`) a signed URL adds.
    pub fn query(&self, expires: u64, token: &str) -> String {
        format!(
            "{}={expires}&{}={token}",
            self.config.expires_param, self.config.param
        )
    }

    /// Checks a request for `path` (normalized, before any rewrite) from
    /// `client` at `now` (Unix seconds).
    pub fn verify(
        &self,
        path: &str,
        token: Option<&str>,
        expires: Option<&str>,
        client: Option<IpAddr>,
        now: u64,
    ) -> Result<(), Denied> {
        let token = token.ok_or(Denied::Missing)?;
        let expires = expires.ok_or(Denied::Malformed("no expiry"))?;
        if expires.is_empty() || expires.len() > 20 || !expires.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Denied::Malformed("the expiry is not Unix seconds"));
        }
        let expires: u64 = expires
            .parse()
            .map_err(|_| Denied::Malformed("the expiry is not Unix seconds"))?;
        let mut parts = token.splitn(3, '.');
        let (Some(id), Some(len), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Denied::Malformed("not <key id>.<length>.<mac>"));
        };
        if len.is_empty() || len.len() > 6 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Denied::Malformed("the length is not a number"));
        }
        let covered: usize = len
            .parse()
            .map_err(|_| Denied::Malformed("the length is not a number"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Denied::Malformed("the mac is not base64url"))?;
        if tag.len() != 32 {
            return Err(Denied::Malformed("the mac is not 32 bytes"));
        }
        let secret = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, s)| s)
            .ok_or_else(|| Denied::UnknownKey(id.chars().take(32).collect()))?;
        let out = |why| Denied::OutOfScope { covered, why };
        let bytes = path.as_bytes();
        match self.config.scope {
            AuthScope::Path if covered != bytes.len() => return Err(out("is not all of it")),
            _ if covered == 0 || covered > bytes.len() => {
                return Err(out("is longer than the path or empty"))
            }
            AuthScope::ManifestDir if bytes[covered - 1] != b'/' => {
                return Err(out("does not end at a '/'"))
            }
            _ => {}
        }
        if escapes_prefix(&bytes[covered..]) {
            return Err(out(
                "the rest leaves by an encoded slash or a '..;' segment",
            ));
        }
        let client = if self.config.bind_client_ip {
            Some(client.ok_or(Denied::BadSignature)?)
        } else {
            None
        };
        Self::mac(secret, &bytes[..covered], expires, client)
            .ok_or(Denied::BadSignature)?
            .verify_slice(&tag)
            .map_err(|_| Denied::BadSignature)?;
        if now > expires {
            return Err(Denied::Expired(now - expires));
        }
        Ok(())
    }
}

/// Whether the part of a (normalized) path a prefix token does not cover
/// could climb out of the prefix at an origin that reads paths its own
/// way: an encoded `/` or `\` (kept by `escaped_slashes = "keep"`; an
/// origin that decodes them before removing dot segments serves
/// `/p/..%2Fother` as `/other`), or a `.`/`..` segment with parameters
/// (`..;x`, which Tomcat and Jetty take for `..`).
fn escapes_prefix(rest: &[u8]) -> bool {
    rest.windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2F") || w[1..].eq_ignore_ascii_case(b"5C"))
    }) || rest.split(|&b| b == b'/').any(|seg| {
        let mut parts = seg.split(|&b| b == b';');
        let name = parts.next().unwrap_or(seg);
        parts.next().is_some() && (name == b"." || name == b"..")
    })
}

/// An IPv4-mapped IPv6 address as IPv4: one client, one signature.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::SigningKey;

    fn signer(scope: AuthScope, bind: bool, ids: &[&str]) -> UrlSigner {
        let cfg = UrlAuth {
            keys: ids
                .iter()
                .map(|id| SigningKey {
                    id: id.to_string(),
                    secret_env: format!("KEY_{id}"),
                })
                .collect(),
            param: "token".into(),
            expires_param: "exp".into(),
            scope,
            bind_client_ip: bind,
            cookies: true,
        };
        UrlSigner::new(&cfg, |env| Some(format!("{env}-0123456789abcdef"))).unwrap()
    }

    fn ok(
        s: &UrlSigner,
        path: &str,
        token: &str,
        exp: u64,
        ip: Option<IpAddr>,
        now: u64,
    ) -> Result<(), Denied> {
        s.verify(path, Some(token), Some(&exp.to_string()), ip, now)
    }

    #[test]
    fn a_path_token_covers_exactly_its_path_until_it_expires() {
        let s = signer(AuthScope::Path, false, &["k1"]);
        let t = s.sign("/vod/a.m3u8", 1000, None, None).unwrap();
        assert!(t.starts_with("k1.11."));
        assert_eq!(ok(&s, "/vod/a.m3u8", &t, 1000, None, 999), Ok(()));
        assert_eq!(ok(&s, "/vod/a.m3u8", &t, 1000, None, 1000), Ok(()));
        assert_eq!(
            ok(&s, "/vod/a.m3u8", &t, 1000, None, 1005),
            Err(Denied::Expired(5))
        );
        // A later expiry with the same mac: tampered.
        assert_eq!(
            ok(&s, "/vod/a.m3u8", &t, 2000, None, 1),
            Err(Denied::BadSignature)
        );
        for other in ["/vod/b.m3u8", "/vod/a.m3u8x", "/vod/a.m3u", "/VOD/a.m3u8"] {
            assert_eq!(
                ok(&s, other, &t, 1000, None, 1).map_err(|e| e.code()),
                Err("invalid"),
                "{other}"
            );
        }
    }

    #[test]
    fn a_prefix_token_covers_what_starts_with_it_and_nothing_else() {
        let s = signer(AuthScope::PathPrefix, false, &["k1"]);
        let covered = s.covered("/vod/t1/master.m3u8", Some("/vod/t1/")).unwrap();
        let t = s.sign(covered, 50, None, None).unwrap();
        for p in ["/vod/t1/master.m3u8", "/vod/t1/720p/seg-1.ts", "/vod/t1/"] {
            assert_eq!(ok(&s, p, &t, 50, None, 1), Ok(()), "{p}");
        }
        for p in ["/vod/t2/master.m3u8", "/vod/", "/", "/vod/t1"] {
            assert!(ok(&s, p, &t, 50, None, 1).is_err(), "{p}");
        }
        assert!(s.covered("/vod/t1/a", Some("/other/")).is_err());
        assert!(s.covered("/vod/t1/a", Some("")).is_err());
    }

    #[test]
    fn a_prefix_token_does_not_reach_past_its_prefix_by_the_origin_s_reading() {
        for scope in [AuthScope::PathPrefix, AuthScope::ManifestDir] {
            let s = signer(scope, false, &["k1"]);
            let t = s.sign("/vod/t1/", 50, None, None).unwrap();
            assert!(ok(&s, "/vod/t1/a%2Fb.ts", &t, 50, None, 1).is_err());
            for p in [
                "/vod/t1/..%2Ft2/x.m3u8",
                "/vod/t1/..%2ft2/x.m3u8",
                "/vod/t1/..%5Ct2/x.m3u8",
                "/vod/t1/..;/t2/x.m3u8",
                "/vod/t1/a/..;x=1/b",
                "/vod/t1/.;/x",
            ] {
                assert!(
                    matches!(ok(&s, p, &t, 50, None, 1), Err(Denied::OutOfScope { .. })),
                    "{scope:?} {p}"
                );
            }
            for p in ["/vod/t1/a;v=1/seg.ts", "/vod/t1/..a/x", "/vod/t1/a%20b.ts"] {
                assert_eq!(ok(&s, p, &t, 50, None, 1), Ok(()), "{scope:?} {p}");
            }
        }
    }

    #[test]
    fn a_manifest_dir_token_covers_the_directory_at_a_slash() {
        let s = signer(AuthScope::ManifestDir, false, &["k1"]);
        let covered = s.covered("/live/ch1/index.m3u8", None).unwrap();
        assert_eq!(covered, "/live/ch1/");
        let t = s.sign(covered, 50, None, None).unwrap();
        assert_eq!(ok(&s, "/live/ch1/seg9.m4s", &t, 50, None, 1), Ok(()));
        assert_eq!(ok(&s, "/live/ch1/hd/seg9.m4s", &t, 50, None, 1), Ok(()));
        assert!(ok(&s, "/live/ch2/seg9.m4s", &t, 50, None, 1).is_err());
        // A token whose length stops inside a name is refused whatever its mac.
        let inner = s.sign("/live/ch", 50, None, None).unwrap();
        assert!(matches!(
            ok(&s, "/live/ch1/seg.m4s", &inner, 50, None, 1),
            Err(Denied::OutOfScope { .. })
        ));
    }

    #[test]
    fn a_bound_token_is_for_one_client_and_mapped_v4_is_v4() {
        let s = signer(AuthScope::Path, true, &["k1"]);
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        let t = s.sign("/x", 9, Some(a), None).unwrap();
        assert_eq!(ok(&s, "/x", &t, 9, Some(a), 1), Ok(()));
        assert_eq!(ok(&s, "/x", &t, 9, Some(mapped), 1), Ok(()));
        assert_eq!(ok(&s, "/x", &t, 9, Some(b), 1), Err(Denied::BadSignature));
        assert_eq!(ok(&s, "/x", &t, 9, None, 1), Err(Denied::BadSignature));
        assert!(s.sign("/x", 9, None, None).is_err());
    }

    #[test]
    fn every_listed_key_verifies_and_a_removed_one_does_not() {
        let both = signer(AuthScope::Path, false, &["new", "old"]);
        let old_only = signer(AuthScope::Path, false, &["old"]);
        let new_only = signer(AuthScope::Path, false, &["new"]);
        let by_old = old_only.sign("/a", 9, None, None).unwrap();
        let by_new = both.sign("/a", 9, None, None).unwrap();
        assert!(by_new.starts_with("new."));
        assert_eq!(ok(&both, "/a", &by_old, 9, None, 1), Ok(()));
        assert_eq!(ok(&both, "/a", &by_new, 9, None, 1), Ok(()));
        assert_eq!(
            ok(&new_only, "/a", &by_old, 9, None, 1),
            Err(Denied::UnknownKey("old".into()))
        );
        // Another secret under the same id.
        let mut cfg = both.config.clone();
        cfg.keys.truncate(1);
        let other = UrlSigner::new(&cfg, |_| Some("another-secret-of-16+".into())).unwrap();
        assert_eq!(
            ok(&other, "/a", &by_new, 9, None, 1),
            Err(Denied::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let s = signer(AuthScope::PathPrefix, false, &["k1"]);
        let good = s.sign("/a/", 9, None, None).unwrap();
        assert_eq!(
            s.verify("/a/b", None, Some("9"), None, 1),
            Err(Denied::Missing)
        );
        assert_eq!(
            s.verify("/a/b", Some(&good), None, None, 1)
                .map_err(|e| e.code()),
            Err("malformed")
        );
        for exp in ["", "-1", "1e9", "99999999999999999999999", "１２", " 9"] {
            assert_eq!(
                s.verify("/a/b", Some(&good), Some(exp), None, 1)
                    .map_err(|e| e.code()),
                Err("malformed"),
                "{exp:?}"
            );
        }
        for t in [
            "",
            ".",
            "..",
            "k1",
            "k1.3",
            "k1..x",
            "k1.3.",
            "k1.x.AAAA",
            "k1.3.!!!!",
            "k1.3.AAAA",
            "k1.99999999999.AAAA",
            "k1.-3.AAAA",
            "k1.18446744073709551616.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let r = s.verify("/a/b", Some(t), Some("9"), None, 1);
            assert!(r.is_err(), "{t:?}");
        }
        let long_len = format!("k1.4000.{}", good.rsplit('.').next().unwrap());
        assert!(matches!(
            s.verify("/a/b", Some(&long_len), Some("9"), None, 1),
            Err(Denied::OutOfScope { .. })
        ));
        let zero = format!("k1.0.{}", good.rsplit('.').next().unwrap());
        assert!(s.verify("/a/b", Some(&zero), Some("9"), None, 1).is_err());
        // A multi-byte path cut inside a character is still only bytes.
        assert!(s
            .verify(
                "/é/b",
                Some("k1.2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                Some("9"),
                None,
                1
            )
            .is_err());
    }

    #[test]
    fn secrets_must_be_set_and_long_enough() {
        let cfg = signer(AuthScope::Path, false, &["k1"]).config;
        assert!(UrlSigner::new(&cfg, |_| None)
            .unwrap_err()
            .contains("KEY_k1 is not set"));
        assert!(UrlSigner::new(&cfg, |_| Some("short".into()))
            .unwrap_err()
            .contains("fewer than 16"));
    }
}
