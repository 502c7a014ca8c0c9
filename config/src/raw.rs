//! The on-disk schema: what a TOML file may say, as written. Every table
//! rejects unknown keys; values that validation checks keep their span so an
//! error can point at them. `validate` turns this into the typed model.
//!
//! `[[listener]]` items are dispatched on `kind` by hand (see `validate`), so
//! that an error inside one still points at its exact line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::units::Scalar;

pub(crate) type S<T> = Spanned<T>;

// === process ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub threads: Option<S<i64>>,
    pub grace_period: Option<S<Scalar>>,
    pub shutdown_delay: Option<S<Scalar>>,
    pub log_format: Option<S<String>>,
    pub access_log: Option<bool>,
    pub access_log_format: Option<S<String>>,
    pub upstream_keepalive: Option<S<i64>>,
    pub work_stealing: Option<bool>,
    pub fast_paths: Option<bool>,
    pub otlp: Option<S<RawOtlp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    pub endpoint: S<String>,
    pub service_name: Option<S<String>>,
    pub sample_ratio: Option<S<Scalar>>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, S<String>>,
    pub timeout: Option<S<Scalar>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<S<String>>,
    pub token: Option<S<String>>,
    pub token_env: Option<S<String>>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: S<String>,
    pub node: Option<S<String>>,
    #[serde(default)]
    pub peer: Vec<S<RawPeer>>,
    pub shield: Option<S<String>>,
    pub shield_fallback: Option<S<String>>,
    pub keep_copies: Option<S<String>>,
    pub health_check: Option<S<RawHealthCheck>>,
    pub timeouts: Option<S<RawTimeouts>>,
    pub capacity: Option<S<RawCapacity>>,
    pub url: Option<S<String>>,
    pub digest: Option<S<RawDigest>>,
}

/// `[site] digest = { min_size = "64 KiB", refresh = "5s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDigest {
    pub min_size: Option<S<Scalar>>,
    pub refresh: Option<S<Scalar>>,
}

/// `[site] capacity = { egress = "10 Gbit/s", connections = 100000 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapacity {
    pub egress: Option<S<String>>,
    pub connections: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub name: S<String>,
    pub address: S<String>,
    pub admin: Option<S<String>>,
}

// === listeners ===

/// Keys every listener kind shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpListener {
    /// Read before the rest (`validate::listeners` dispatches on it); a
    /// field here so an unknown key's error lists `kind` among the keys.
    #[serde(rename = "kind", default)]
    pub _kind: Option<S<String>>,
    pub name: Option<S<String>>,
    pub address: S<String>,
    pub max_connections: Option<S<i64>>,
    pub accept_proxy_protocol: Option<bool>,
    pub h2c: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub escaped_slashes: Option<S<String>>,
    pub limits: Option<S<RawHttpLimits>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpsListener {
    /// Read before the rest (`validate::listeners` dispatches on it); a
    /// field here so an unknown key's error lists `kind` among the keys.
    #[serde(rename = "kind", default)]
    pub _kind: Option<S<String>>,
    pub name: Option<S<String>>,
    pub address: S<String>,
    pub max_connections: Option<S<i64>>,
    pub accept_proxy_protocol: Option<bool>,
    pub http2: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub escaped_slashes: Option<S<String>>,
    pub limits: Option<S<RawHttpLimits>>,
    #[serde(default)]
    pub certificate: Vec<S<RawCertificate>>,
    pub tls: Option<S<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub acme: Option<S<RawAcme>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcme {
    pub directory: S<String>,
    pub email: Option<S<String>>,
    #[serde(default)]
    pub domains: Vec<S<String>>,
    pub challenge: Option<S<String>>,
    pub state_dir: Option<S<String>>,
    pub renew_before: Option<S<Scalar>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpListener {
    /// Read before the rest (`validate::listeners` dispatches on it); a
    /// field here so an unknown key's error lists `kind` among the keys.
    #[serde(rename = "kind", default)]
    pub _kind: Option<S<String>>,
    pub name: Option<S<String>>,
    pub address: S<String>,
    pub pool: S<String>,
    pub max_connections: Option<S<i64>>,
    pub accept_proxy_protocol: Option<bool>,
    pub idle_timeout: Option<S<Scalar>>,
    pub connection_rate: Option<S<Scalar>>,
    pub connection_burst: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsListener {
    /// Read before the rest (`validate::listeners` dispatches on it); a
    /// field here so an unknown key's error lists `kind` among the keys.
    #[serde(rename = "kind", default)]
    pub _kind: Option<S<String>>,
    pub name: Option<S<String>>,
    pub address: S<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpLimits {
    pub header_timeout: Option<S<Scalar>>,
    pub keepalive_timeout: Option<S<Scalar>>,
    pub send_timeout: Option<S<Scalar>>,
    pub max_header_bytes: Option<S<Scalar>>,
    pub max_headers: Option<S<i64>>,
    pub max_request_line: Option<S<Scalar>>,
    pub max_body: Option<S<Scalar>>,
    pub max_requests_per_connection: Option<S<i64>>,
    pub request_buffer: Option<S<Scalar>>,
    pub tcp_notsent_lowat: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    #[serde(default)]
    pub server_names: Vec<S<String>>,
    pub cert: S<String>,
    pub key: S<String>,
    pub default: Option<bool>,
}

// === pools ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub name: S<String>,
    pub algorithm: Option<S<String>>,
    pub hash_key: Option<S<WordOrPart>>,
    pub sticky_cookie: Option<S<RawStickyCookie>>,
    pub load_feedback: Option<S<RawLoadFeedback>>,
    pub host: Option<S<String>>,
    pub panic_mode: Option<bool>,
    pub proxy_protocol: Option<S<String>>,
    pub max_connections_per_backend: Option<S<i64>>,
    #[serde(default)]
    pub backends: Vec<S<RawBackend>>,
    pub health_check: Option<S<RawHealthCheck>>,
    pub outlier_detection: Option<S<RawOutlier>>,
    pub circuit_breaker: Option<S<RawBreaker>>,
    pub timeouts: Option<S<RawTimeouts>>,
    pub retry: Option<S<RawRetry>>,
    pub tls: Option<S<RawUpstreamTls>>,
}

/// A word (`"uri"`, `"client_ip"`) or a one-key table naming a request part
/// (`{ header = "X-User" }`). The table form rejects unknown keys at their path.
#[derive(Debug)]
pub(crate) enum WordOrPart {
    Word(String),
    Part(RawNamedPart),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNamedPart {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
}

impl<'de> Deserialize<'de> for WordOrPart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WordOrPart;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a word or a table such as { header = \"X-Name\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WordOrPart, E> {
                Ok(WordOrPart::Word(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WordOrPart, A::Error> {
                RawNamedPart::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(WordOrPart::Part)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStickyCookie {
    pub name: Option<S<String>>,
    pub ttl: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoadFeedback {
    pub header: Option<S<String>>,
    pub from_health_check: Option<bool>,
    pub min_weight_percent: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub address: S<String>,
    pub weight: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub kind: Option<S<String>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    pub expect_status: Option<S<Scalar>>,
    pub body_contains: Option<S<String>>,
    pub interval: Option<S<Scalar>>,
    pub timeout: Option<S<Scalar>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlier {
    pub consecutive_5xx: Option<S<i64>>,
    pub consecutive_gateway_errors: Option<S<i64>>,
    pub consecutive_connect_failures: Option<S<i64>>,
    pub failure_percentage: Option<S<i64>>,
    pub failure_percentage_min_requests: Option<S<i64>>,
    pub interval: Option<S<Scalar>>,
    pub base_ejection_time: Option<S<Scalar>>,
    pub max_ejection_time: Option<S<Scalar>>,
    pub max_ejection_percent: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub max_connections: Option<S<i64>>,
    pub max_pending: Option<S<i64>>,
    pub max_requests: Option<S<i64>>,
    pub max_retries: Option<S<i64>>,
    pub consecutive_failures: Option<S<i64>>,
    pub failure_rate: Option<S<i64>>,
    pub min_requests: Option<S<i64>>,
    pub window: Option<S<Scalar>>,
    pub open_for: Option<S<Scalar>>,
    pub half_open_probes: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub connect: Option<S<Scalar>>,
    pub first_byte: Option<S<Scalar>>,
    pub idle: Option<S<Scalar>>,
    pub total: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub attempts: Option<S<i64>>,
    pub on: Option<Vec<S<String>>>,
    pub backoff: Option<S<Scalar>>,
    pub max_backoff: Option<S<Scalar>>,
    pub budget_percent: Option<S<i64>>,
    pub min_concurrent_retries: Option<S<i64>>,
    pub non_idempotent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub sni: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub verify: Option<bool>,
}

// === routes ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<S<String>>,
    pub priority: Option<S<i64>>,
    pub pool: Option<S<String>>,
    pub redirect: Option<S<RawRedirect>>,
    pub respond: Option<S<RawRespond>>,
    pub steer: Option<S<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<S<RawMatch>>,
    pub strip_prefix: Option<S<String>>,
    pub rewrite_path: Option<S<String>>,
    pub request_headers: Option<S<RawHeaderOps>>,
    pub response_headers: Option<S<RawHeaderOps>>,
    pub timeouts: Option<S<RawTimeouts>>,
    pub retry: Option<S<RawRetry>>,
    pub cache: Option<S<RawRouteCache>>,
    #[serde(default)]
    pub rate_limits: Vec<S<String>>,
    pub max_body: Option<S<Scalar>>,
    pub auth: Option<S<RawUrlAuth>>,
    pub geo: Option<S<RawRouteGeo>>,
    pub cmcd: Option<S<RawCmcd>>,
}

/// `auth = { kind = "hmac", ... }` on a route.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUrlAuth {
    pub kind: Option<S<String>>,
    pub secret_env: Option<S<String>>,
    #[serde(default)]
    pub keys: Vec<S<RawSigningKey>>,
    pub param: Option<S<String>>,
    pub expires_param: Option<S<String>>,
    pub scope: Option<S<String>>,
    #[serde(default)]
    pub bind: Vec<S<String>>,
    pub cookies: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSigningKey {
    pub id: S<String>,
    pub secret_env: S<String>,
}

/// `geo = { allow = [...] }` or `{ deny = [...] }` on a route.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteGeo {
    pub allow: Option<Vec<S<String>>>,
    pub deny: Option<Vec<S<String>>>,
    pub unknown: Option<S<String>>,
    pub body: Option<String>,
}

/// `cmcd = { forward = true }` on a route.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCmcd {
    pub forward: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub listeners: Option<Vec<S<String>>>,
    pub host: Option<S<OneOrMany>>,
    pub path_prefix: Option<S<String>>,
    pub path_exact: Option<S<String>>,
    pub path_regex: Option<S<String>>,
    pub methods: Option<Vec<S<String>>>,
    #[serde(default)]
    pub headers: Vec<S<RawValueMatch>>,
    #[serde(default)]
    pub cookies: Vec<S<RawValueMatch>>,
    #[serde(default)]
    pub query: Vec<S<RawValueMatch>>,
}

/// A string or a list of strings.
#[derive(Debug, Clone)]
pub(crate) struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawValueMatch {
    pub name: S<String>,
    pub equals: Option<S<String>>,
    pub regex: Option<S<String>>,
    pub present: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedirect {
    pub to: Option<S<String>>,
    pub scheme: Option<S<String>>,
    pub status: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRespond {
    pub status: S<i64>,
    pub body: Option<String>,
    pub content_type: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderOps {
    #[serde(default)]
    pub add: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub set: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub remove: Vec<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteCache {
    pub enabled: Option<bool>,
    pub ttl: Option<S<Scalar>>,
    pub ignore_query: Option<S<RawIgnoreQuery>>,
    #[serde(default)]
    pub key_headers: Vec<S<String>>,
    pub stale_while_revalidate: Option<S<Scalar>>,
    pub stale_if_error: Option<S<Scalar>>,
    pub store_set_cookie: Option<bool>,
    pub store_authorization: Option<bool>,
    pub slice: Option<bool>,
    pub prefetch: Option<S<i64>>,
    #[serde(default)]
    pub bypass: Vec<S<String>>,
    pub client_directives: Option<S<String>>,
    #[serde(default)]
    pub trusted_clients: Vec<S<String>>,
    pub vary_normalize: Option<Vec<S<String>>>,
    #[serde(default)]
    pub accept_encoding: Vec<S<String>>,
}

/// `ignore_query = true` (drop the whole query from the key) or a list of parameter names.
#[derive(Debug)]
pub(crate) enum RawIgnoreQuery {
    All(bool),
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for RawIgnoreQuery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawIgnoreQuery;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true/false or a list of query parameter names")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawIgnoreQuery, E> {
                Ok(RawIgnoreQuery::All(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawIgnoreQuery, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(RawIgnoreQuery::Names(out))
            }
        }
        d.deserialize_any(V)
    }
}

// === cache ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub ram_size: Option<S<Scalar>>,
    pub ram_max_object: Option<S<Scalar>>,
    pub disk_path: Option<S<String>>,
    pub disk_size: Option<S<Scalar>>,
    pub disk_max_object: Option<S<Scalar>>,
    pub slice_size: Option<S<Scalar>>,
    pub slice_threshold: Option<S<Scalar>>,
    pub lock_timeout: Option<S<Scalar>>,
    pub default_ttl: Option<S<Scalar>>,
    pub video: Option<S<RawVideo>>,
    #[serde(default)]
    pub ttl_rule: Vec<S<RawTtlRule>>,
    pub targeted_fields: Option<Vec<S<String>>>,
    pub forward_targeted_fields: Option<bool>,
    pub status_name: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVideo {
    pub vod_playlist_ttl: Option<S<Scalar>>,
    pub segment_ttl: Option<S<Scalar>>,
    pub live_playlist_max_ttl: Option<S<Scalar>>,
    pub prefetch: Option<S<i64>>,
    pub prefetch_concurrency: Option<S<i64>>,
    pub blocking_hold: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTtlRule {
    pub path_suffix: Option<S<String>>,
    pub path_regex: Option<S<String>>,
    pub status: Option<Vec<S<i64>>>,
    pub ttl: S<Scalar>,
}

// === rate limits ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub name: S<String>,
    #[serde(default)]
    pub key: Vec<S<WordOrPart>>,
    pub rate: S<Scalar>,
    pub burst: Option<S<i64>>,
    pub scope: Option<S<String>>,
    pub mode: Option<S<String>>,
    #[serde(default)]
    pub exempt: Vec<S<String>>,
    pub ipv4_prefix: Option<S<i64>>,
    pub ipv6_prefix: Option<S<i64>>,
    pub max_keys: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub url: S<String>,
    pub timeout: Option<S<Scalar>>,
    pub key_prefix: Option<String>,
}

/// `[resolver]`: how backend names are resolved.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResolver {
    #[serde(default)]
    pub nameservers: Vec<S<String>>,
    pub min_ttl: Option<S<Scalar>>,
    pub max_ttl: Option<S<Scalar>>,
    pub timeout: Option<S<Scalar>>,
}

// === dns ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub all_sites_down: Option<S<String>>,
    #[serde(default)]
    pub zone: Vec<S<RawZone>>,
    #[serde(default)]
    pub site: Vec<S<RawDnsSite>>,
    pub locator: Option<S<RawLocator>>,
    pub rrl: Option<S<RawRrl>>,
    pub threads: Option<S<i64>>,
    pub packet_cache: Option<S<Scalar>>,
    #[serde(default)]
    pub tsig_key: Vec<S<RawTsigKey>>,
    pub shedding: Option<S<RawShedding>>,
}

/// `[dns.shedding]`: when a loaded site sends clients to the next one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShedding {
    pub high_water: Option<S<f64>>,
    pub low_water: Option<S<f64>>,
    pub step: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTsigKey {
    pub name: S<String>,
    pub algorithm: Option<S<String>>,
    pub secret: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransfer {
    #[serde(default)]
    pub allow: Vec<S<String>>,
    pub key: Option<S<String>>,
    #[serde(default)]
    pub notify: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    pub name: S<String>,
    pub file: Option<S<String>>,
    pub transfer: Option<S<RawTransfer>>,
    pub ttl: Option<S<i64>>,
    pub soa: Option<S<RawSoa>>,
    #[serde(default)]
    pub ns: Vec<S<String>>,
    #[serde(default)]
    pub records: Vec<S<RawRecord>>,
    #[serde(default)]
    pub geo: Vec<S<RawGeo>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSoa {
    pub mname: S<String>,
    pub rname: S<String>,
    pub serial: Option<S<i64>>,
    pub refresh: Option<S<Scalar>>,
    pub retry: Option<S<Scalar>>,
    pub expire: Option<S<Scalar>>,
    pub minimum: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecord {
    pub name: S<String>,
    #[serde(rename = "type")]
    pub rtype: S<String>,
    pub value: S<String>,
    pub ttl: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeo {
    pub name: S<String>,
    pub sites: Option<Vec<S<String>>>,
    pub policy: Option<S<String>>,
    pub count: Option<S<i64>>,
    pub ttl: Option<S<i64>>,
    #[serde(default)]
    pub default_sites: Vec<S<String>>,
    #[serde(default)]
    pub failover: BTreeMap<String, Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsSite {
    pub name: S<String>,
    pub lat: S<f64>,
    pub lon: S<f64>,
    pub region: Option<String>,
    pub country: Option<String>,
    #[serde(default)]
    pub ipv4: Vec<S<String>>,
    #[serde(default)]
    pub ipv6: Vec<S<String>>,
    pub weight: Option<S<i64>>,
    pub capacity: Option<S<i64>>,
    pub health: Option<S<RawSiteHealth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSiteHealth {
    #[serde(default)]
    pub urls: Vec<S<String>>,
    pub interval: Option<S<Scalar>>,
    pub timeout: Option<S<Scalar>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub expect_status: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocator {
    #[serde(default)]
    pub cidr: Vec<S<RawCidrLocation>>,
    pub csv: Option<S<String>>,
    pub mmdb: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCidrLocation {
    pub prefix: S<String>,
    pub lat: Option<S<f64>>,
    pub lon: Option<S<f64>>,
    pub site: Option<S<String>>,
    pub region: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRrl {
    pub responses_per_second: Option<S<i64>>,
    pub window: Option<S<Scalar>>,
    pub slip: Option<S<i64>>,
    pub ipv4_prefix: Option<S<i64>>,
    pub ipv6_prefix: Option<S<i64>>,
    #[serde(default)]
    pub exempt: Vec<S<String>>,
    pub log_only: Option<bool>,
}
