//! ACME (RFC 8555) for https listeners with `tls.acme`, through
//! `instant-acme`: one task per listener orders a certificate for its
//! domains, answers the CA's challenge (`http-01` through every http
//! listener, RFC 8555 §8.3; `tls-alpn-01` on the listener itself, RFC 8737),
//! keeps the result under `state_dir`, and renews it before it expires. The
//! certificate being served stays until its successor is in place; a failed
//! order is retried after 10 s, 1 min, 5 min, 20 min, then hourly (Let's
//! Encrypt allows 5 failed validations per name per hour).
//!
//! Files under `state_dir` (private keys mode 0600):
//! - `account-HOST_PORT.json`: the account's key and URL at that CA;
//! - `DOMAIN.pem`: the chain, then its key (`DOMAIN` is the first domain);
//! - `DOMAIN.json`: which CA and domains the `.pem` was obtained for.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_config::{Acme, AcmeChallenge};
use edge_proxy::error::BuildError;
use edge_proxy::listen::acme::{AcmeCert, AcmeSlot};
use edge_proxy::state::Proxy;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use parking_lot::Mutex;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// The ACME tasks of the running config, by listener.
#[derive(Default)]
pub struct AcmeManager {
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    slot: Arc<AcmeSlot>,
    task: tokio::task::AbortHandle,
}

impl AcmeManager {
    /// The slot for a listener's `tls.acme`: the running one when its
    /// settings are unchanged, else a new one holding the certificate kept
    /// under `state_dir` (if it is for the same CA and domains). Creates
    /// `state_dir`; blocks on the file system.
    ///
    /// Errors: `state_dir` cannot be created.
    pub fn slot(&self, listener: &str, config: &Acme) -> Result<Arc<AcmeSlot>, BuildError> {
        if let Some(r) = self.running.lock().get(listener) {
            if r.slot.config == *config {
                return Ok(r.slot.clone());
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(|e| BuildError::Certificate {
                listener: listener.to_string(),
                path: config.state_dir.clone(),
                why: format!("cannot create the tls.acme state_dir: {e}"),
            })?;
        let slot = AcmeSlot::new(listener, config.clone());
        match load(config) {
            Ok(Some(cert)) => slot.install(cert),
            Ok(None) => {}
            Err(why) => tracing::warn!(
                listener,
                path = %cert_path(config).display(),
                "the kept ACME certificate is not usable ({why}); ordering a new one"
            ),
        }
        Ok(Arc::new(slot))
    }

    /// After an apply: keeps the tasks whose slot is still in use, stops the
    /// others, starts one for each new slot, and sets the expiry metric of
    /// every certificate served.
    pub fn commit(&self, slots: Vec<Arc<AcmeSlot>>, proxy: &Arc<Proxy>) {
        let mut running = self.running.lock();
        running.retain(|_, r| {
            let keep = slots.iter().any(|s| Arc::ptr_eq(s, &r.slot));
            if !keep {
                r.task.abort();
            }
            keep
        });
        for slot in slots {
            if let Some(cert) = slot.current() {
                set_expiry(proxy, &slot, &cert);
            }
            if running.contains_key(&slot.listener) {
                continue;
            }
            let task = tokio::spawn(run(slot.clone(), proxy.clone())).abort_handle();
            running.insert(slot.listener.clone(), Running { slot, task });
        }
    }
}

impl Drop for AcmeManager {
    fn drop(&mut self) {
        for r in self.running.lock().values() {
            r.task.abort();
        }
    }
}

fn set_expiry(proxy: &Proxy, slot: &AcmeSlot, cert: &AcmeCert) {
    proxy
        .metrics
        .certificate_expiry
        .with_label_values(&[&slot.listener, &cert.path.display().to_string()])
        .set(cert.not_after as f64);
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix
/// seconds): `renew_before` ahead of expiry, at most half the lifetime (so a
/// short-lived certificate is not renewed without end); by default when a
/// third of the lifetime is left, as Let's Encrypt advises.
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Option<Duration>) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let ahead = match renew_before {
        Some(d) => i64::try_from(d.as_secs())
            .unwrap_or(i64::MAX)
            .min(lifetime / 2),
        None => lifetime / 3,
    };
    not_after - ahead
}

/// The wait before retrying after `failures` failed orders in a row (1 = the first).
pub fn retry_after(failures: u32) -> Duration {
    const STEPS: [u64; 5] = [10, 60, 300, 1200, 3600];
    let i = (failures.max(1) - 1) as usize;
    Duration::from_secs(STEPS[i.min(STEPS.len() - 1)])
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// One listener's loop: wait until renewal is due, order, keep, serve.
async fn run(slot: Arc<AcmeSlot>, proxy: Arc<Proxy>) {
    let listener = slot.listener.clone();
    let domains = slot.config.domains.join(",");
    let mut failures = 0u32;
    loop {
        if let Some(cert) = slot.current() {
            let due = renew_at(cert.not_before, cert.not_after, slot.config.renew_before);
            let wait = due - now();
            if wait > 0 {
                // Woken hourly to look again, so a changed clock is noticed.
                tokio::time::sleep(Duration::from_secs(wait.min(3600) as u64)).await;
                continue;
            }
            tracing::info!(
                listener,
                domains,
                not_after = cert.not_after,
                "ACME certificate renewal is due"
            );
        }
        match obtain(&slot, &proxy).await {
            Ok(cert) => {
                failures = 0;
                proxy
                    .metrics
                    .acme_orders
                    .with_label_values(&[&listener, "issued"])
                    .inc();
                set_expiry(&proxy, &slot, &cert);
                tracing::info!(
                    listener,
                    domains,
                    not_after = cert.not_after,
                    path = %cert.path.display(),
                    "ACME certificate obtained"
                );
                slot.install(cert);
            }
            Err(why) => {
                failures += 1;
                let wait = retry_after(failures);
                proxy
                    .metrics
                    .acme_orders
                    .with_label_values(&[&listener, "failed"])
                    .inc();
                tracing::warn!(
                    listener,
                    domains,
                    retry_in_s = wait.as_secs(),
                    "ACME order failed: {why}"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Challenge answers published for one order, withdrawn when it ends
/// (also when the task is stopped mid-order).
struct Published<'a> {
    slot: &'a AcmeSlot,
    proxy: &'a Proxy,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.proxy.acme_http01.remove(t);
        }
        for n in &self.names {
            self.slot.clear_challenge_cert(n);
        }
    }
}

fn acme_error(e: instant_acme::Error) -> String {
    e.to_string()
}

/// One order, RFC 8555 §7.4: authorizations, challenges, finalization with
/// a new key, download; the result written under `state_dir`.
async fn obtain(slot: &AcmeSlot, proxy: &Proxy) -> Result<AcmeCert, String> {
    let config = &slot.config;
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = new_order(config, &identifiers).await?;
    let mut published = Published {
        slot,
        proxy,
        tokens: Vec::new(),
        names: Vec::new(),
    };
    let (kind, kind_name) = match config.challenge {
        AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
        AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {}", acme_error(e)))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization for {name} is {other:?}")),
        }
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {kind_name} challenge for {name}"))?;
        let key_authorization = challenge.key_authorization();
        match config.challenge {
            AcmeChallenge::Http01 => {
                proxy
                    .acme_http01
                    .insert(&challenge.token, key_authorization.as_str());
                published.tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                let cert = challenge_certificate(&name, key_authorization.digest().as_ref())?;
                slot.set_challenge_cert(&name, cert);
                published.names.push(name.clone());
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("{kind_name} challenge for {name}: {}", acme_error(e)))?;
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| format!("waiting for validation: {}", acme_error(e)))?;
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order, status).await);
    }
    drop(published);
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {}", acme_error(e)))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| format!("certificate: {}", acme_error(e)))?;
    store(config, &chain_pem, &key_pem)
}

/// The CA's reasons for a failed order: each failed challenge's problem.
async fn why_invalid(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut why = Vec::new();
    if let Some(p) = &order.state().error {
        why.push(p.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                why.push(format!("{}: {p}", authz.identifier()));
            }
        }
    }
    if why.is_empty() {
        format!("the order is {status:?}")
    } else {
        format!("the order is {status:?}: {}", why.join("; "))
    }
}

/// The `tls-alpn-01` certificate for `name` (RFC 8737 §3): self-signed, the
/// name as its only subjectAltName, and the critical `acmeIdentifier`
/// extension holding the SHA-256 digest of the key authorization.
pub fn challenge_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

// === the account ===

/// The account file for the CA of `directory`: one per directory URL (two
/// CAs on one host, such as step-ca provisioners, are two accounts).
fn account_path(config: &Acme) -> PathBuf {
    use sha2::Digest;
    let (host, port) = url::Url::parse(&config.directory)
        .ok()
        .map(|u| {
            (
                u.host_str().unwrap_or("ca").to_string(),
                u.port_or_known_default().unwrap_or(443),
            )
        })
        .unwrap_or_else(|| ("ca".to_string(), 443));
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = sha2::Sha256::digest(config.directory.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    config
        .state_dir
        .join(format!("account-{host}_{port}-{tag}.json"))
}

fn builder(config: &Acme) -> Result<instant_acme::AccountBuilder, String> {
    match &config.ca {
        Some(ca) => Account::builder_with_root(ca)
            .map_err(|e| format!("tls.acme.ca {}: {}", ca.display(), acme_error(e))),
        None => Account::builder().map_err(acme_error),
    }
}

/// An account as kept: its credentials and the contact it was given.
#[derive(Serialize, Deserialize)]
struct KeptAccount {
    contact: Option<String>,
    credentials: AccountCredentials,
}

/// RFC 8555 §6.7: the CA has no account for the key (it forgot it, or it
/// was deactivated elsewhere).
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// One account registration at a time (two listeners ordering at start
/// would each register one and write the same file).
static ACCOUNTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn contact(config: &Acme) -> Option<String> {
    config.email.as_ref().map(|e| format!("mailto:{e}"))
}

/// The account kept for this CA (its contact brought up to date), or a new
/// one (kept for next time).
async fn account(config: &Acme) -> Result<Account, String> {
    let _one = ACCOUNTS.lock().await;
    let path = account_path(config);
    if let Ok(text) = std::fs::read(&path) {
        match serde_json::from_slice::<KeptAccount>(&text) {
            Ok(kept) => {
                let account = builder(config)?
                    .from_credentials(kept.credentials)
                    .await
                    .map_err(|e| format!("account {}: {}", path.display(), acme_error(e)))?;
                let want = contact(config);
                if kept.contact != want {
                    let contacts: Vec<&str> = want.iter().map(String::as_str).collect();
                    match account.update_contacts(&contacts).await {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "ACME account contact updated");
                            if let Ok(text) = std::fs::read(&path) {
                                if let Ok(mut kept) = serde_json::from_slice::<KeptAccount>(&text) {
                                    kept.contact = want;
                                    if let Ok(json) = serde_json::to_vec_pretty(&kept) {
                                        write_private(&path, &json)?;
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(
                            path = %path.display(),
                            "the ACME account's contact could not be updated: {}",
                            acme_error(e)
                        ),
                    }
                }
                return Ok(account);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "the kept ACME account is not readable ({e}); registering a new one"
            ),
        }
    }
    register(config, &path).await
}

/// A new account at the CA, kept at `path`.
async fn register(config: &Acme, path: &Path) -> Result<Account, String> {
    let contact = contact(config);
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder(config)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new account at {}: {}", config.directory, acme_error(e)))?;
    let kept = KeptAccount {
        contact,
        credentials,
    };
    let json = serde_json::to_vec_pretty(&kept).map_err(|e| e.to_string())?;
    write_private(path, &json)?;
    Ok(account)
}

/// A new order; when the CA no longer knows the kept account, a new
/// account is registered and the order asked for again.
async fn new_order(
    config: &Acme,
    identifiers: &[Identifier],
) -> Result<instant_acme::Order, String> {
    let account = account(config).await?;
    match account.new_order(&NewOrder::new(identifiers)).await {
        Err(instant_acme::Error::Api(p)) if p.r#type.as_deref() == Some(ACCOUNT_GONE) => {
            let path = account_path(config);
            tracing::warn!(
                path = %path.display(),
                "the CA no longer knows the kept ACME account ({p}); registering a new one"
            );
            let account = {
                let _one = ACCOUNTS.lock().await;
                register(config, &path).await?
            };
            account
                .new_order(&NewOrder::new(identifiers))
                .await
                .map_err(|e| format!("new order: {}", acme_error(e)))
        }
        other => other.map_err(|e| format!("new order: {}", acme_error(e))),
    }
}

// === kept certificates ===

/// What a kept certificate was obtained for.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Obtained {
    directory: String,
    domains: Vec<String>,
}

fn cert_path(config: &Acme) -> PathBuf {
    let first = config.domains.first().map_or("certificate", String::as_str);
    config.state_dir.join(format!("{first}.pem"))
}

/// Writes `bytes` to `path` through a temporary file and a rename, readable
/// by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Keeps a new certificate and returns it ready to serve.
fn store(config: &Acme, chain_pem: &str, key_pem: &str) -> Result<AcmeCert, String> {
    let path = cert_path(config);
    let pem = format!(
        "{chain_pem}{}{key_pem}",
        if chain_pem.ends_with('\n') { "" } else { "\n" }
    );
    let cert = parse(config, &path, pem.as_bytes())?;
    let meta = Obtained {
        directory: config.directory.clone(),
        domains: config.domains.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
    write_private(&path.with_extension("json"), &json)?;
    write_private(&path, pem.as_bytes())?;
    Ok(cert)
}

fn parse(config: &Acme, path: &Path, pem: &[u8]) -> Result<AcmeCert, String> {
    let (key, not_before, not_after, names) = edge_proxy::listen::tls::certified_key_from_pem(pem)?;
    if let Some(missing) = config.domains.iter().find(|d| !names.contains(d)) {
        return Err(format!("the certificate does not name {missing}"));
    }
    Ok(AcmeCert {
        key,
        not_before,
        not_after,
        path: path.to_path_buf(),
    })
}

/// The kept certificate, if there is one for this CA and these domains.
fn load(config: &Acme) -> Result<Option<AcmeCert>, String> {
    let path = cert_path(config);
    let meta = match std::fs::read(path.with_extension("json")) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta: Obtained = serde_json::from_slice(&meta).map_err(|e| e.to_string())?;
    if meta.directory != config.directory || meta.domains != config.domains {
        tracing::info!(
            path = %path.display(),
            "the kept ACME certificate is for another CA or other domains; ordering a new one"
        );
        return Ok(None);
    }
    let pem = std::fs::read(&path).map_err(|e| e.to_string())?;
    let cert = parse(config, &path, &pem)?;
    // A key others may read: made private again, and said so.
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the kept ACME key was readable by others; made 0600"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot make {} private: {e}", path.display()))?;
        }
    }
    Ok(Some(cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_is_a_third_of_the_lifetime_ahead_by_default_and_at_most_half_when_set() {
        // 90-day certificate: renew 30 days ahead.
        assert_eq!(renew_at(0, 90 * DAY, None), 60 * DAY);
        // 6-day certificate: 2 days ahead.
        assert_eq!(renew_at(0, 6 * DAY, None), 4 * DAY);
        // renew_before as set.
        assert_eq!(
            renew_at(0, 90 * DAY, Some(Duration::from_secs(10 * DAY as u64))),
            80 * DAY
        );
        // More than the lifetime: halfway, never at once again and again.
        assert_eq!(
            renew_at(0, 6 * DAY, Some(Duration::from_secs(30 * DAY as u64))),
            3 * DAY
        );
        assert_eq!(renew_at(0, 6 * DAY, Some(Duration::MAX)), 3 * DAY);
        // A backwards validity renews at once.
        assert_eq!(renew_at(10 * DAY, 5 * DAY, None), 5 * DAY);
    }

    #[test]
    fn retries_back_off_to_hourly() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [10, 60, 300, 1200, 3600, 3600, 3600, 3600]);
        assert_eq!(retry_after(0).as_secs(), 10);
        assert_eq!(retry_after(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn the_tls_alpn_challenge_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = challenge_certificate("a.example.com", &digest).expect("certificate");
        let der = key.cert.first().expect("leaf");
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // DER OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let san = cert
            .subject_alternative_name()
            .expect("SAN")
            .expect("SAN present");
        assert_eq!(san.value.general_names.len(), 1);
        assert_eq!(
            san.value.general_names[0],
            x509_parser::extensions::GeneralName::DNSName("a.example.com")
        );
    }

    #[test]
    fn a_state_dir_that_cannot_be_made_fails_the_apply_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let config = Acme {
            directory: "https://ca.test/dir".into(),
            email: None,
            domains: vec!["a.example.com".into()],
            challenge: AcmeChallenge::TlsAlpn01,
            state_dir: file.join("acme"),
            renew_before: None,
            ca: None,
        };
        let manager = AcmeManager::default();
        let Err(e) = manager.slot("web", &config) else {
            panic!("a state_dir under a file was made");
        };
        let text = e.to_string();
        assert!(
            text.contains("web") && text.contains("a-file/acme"),
            "{text}"
        );
        // A made one: created private, the slot empty until an order.
        let config = Acme {
            state_dir: dir.path().join("made"),
            ..config
        };
        let slot = manager.slot("web", &config).expect("slot");
        assert!(slot.current().is_none());
        let mode = std::fs::metadata(dir.path().join("made"))
            .expect("made")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn account_files_are_per_ca() {
        let mut config = Acme {
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            email: None,
            domains: vec!["a.example.com".into()],
            challenge: AcmeChallenge::TlsAlpn01,
            state_dir: PathBuf::from("/s"),
            renew_before: None,
            ca: None,
        };
        let le = account_path(&config);
        let name = le.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            name.starts_with("account-acme-v02.api.letsencrypt.org_443-")
                && name.ends_with(".json"),
            "{name}"
        );
        // Another directory on the same host and port: another account.
        config.directory = "https://acme-v02.api.letsencrypt.org/other/directory".into();
        assert_ne!(account_path(&config), le);
        config.directory = "https://[::1]:14000/dir".into();
        let v6 = account_path(&config).display().to_string();
        assert!(v6.starts_with("/s/account-___1__14000-"), "{v6}");
        assert_eq!(cert_path(&config), Path::new("/s/a.example.com.pem"));
    }

    #[test]
    fn a_kept_certificate_for_other_domains_or_another_ca_is_not_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Acme {
            directory: "https://ca.test/dir".into(),
            email: None,
            domains: vec!["a.example.com".into(), "b.example.com".into()],
            challenge: AcmeChallenge::TlsAlpn01,
            state_dir: dir.path().to_path_buf(),
            renew_before: None,
            ca: None,
        };
        assert!(load(&config).expect("no files").is_none());
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![
            "a.example.com".to_string(),
            "b.example.com".to_string(),
        ])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
        let kept = store(&config, &cert.pem(), &key.serialize_pem()).expect("stored");
        assert_eq!(kept.path, dir.path().join("a.example.com.pem"));
        let mode = std::fs::metadata(&kept.path).expect("file").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(load(&config).expect("readable").is_some());
        // A key left readable by others is made private when loaded.
        std::fs::set_permissions(
            &kept.path,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
        assert!(load(&config).expect("readable").is_some());
        let mode = std::fs::metadata(&kept.path).expect("file").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Another CA.
        config.directory = "https://other.test/dir".into();
        assert!(load(&config).expect("readable").is_none());
        // Other domains (the same first one).
        config.directory = "https://ca.test/dir".into();
        config.domains.push("c.example.com".into());
        assert!(load(&config).expect("readable").is_none());
        // A certificate without a name it is stored for is refused.
        assert!(store(&config, &cert.pem(), &key.serialize_pem())
            .expect_err("c is not named")
            .contains("c.example.com"));
        // A damaged file is an error, not a panic.
        config.domains.pop();
        std::fs::write(dir.path().join("a.example.com.pem"), b"garbage").expect("write");
        assert!(load(&config).is_err());
    }
}
