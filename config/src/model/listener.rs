use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::units::{duration_serde, Rate};

/// `[[listener]]`: an address the node accepts traffic on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    /// Unique; defaults to `<kind>-<address>`.
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
}

impl Listener {
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ListenerKind {
    Http(HttpListener),
    Https(HttpsListener),
    Tcp(TcpListener),
    Dns,
}

impl ListenerKind {
    pub fn name(&self) -> &'static str {
        match self {
            ListenerKind::Http(_) => "http",
            ListenerKind::Https(_) => "https",
            ListenerKind::Tcp(_) => "tcp",
            ListenerKind::Dns => "dns",
        }
    }

    /// The HTTP settings of an `http` or `https` listener.
    pub fn http(&self) -> Option<&HttpListener> {
        match self {
            ListenerKind::Http(h) => Some(h),
            ListenerKind::Https(h) => Some(&h.http),
            _ => None,
        }
    }
}

/// Settings shared by `http` and `https` listeners.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpListener {
    /// Connections open at once on this listener; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Expect a PROXY protocol (v1 or v2) header from a trusted load balancer in front.
    pub accept_proxy_protocol: bool,
    /// Accept cleartext HTTP/2 (prior knowledge).
    pub h2c: bool,
    /// Collapse runs of `/` in request paths (Envoy's `merge_slashes`).
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` in request paths.
    pub escaped_slashes: EscapedSlashes,
    pub limits: HttpLimits,
}

/// What an `http`/`https` listener does with an encoded `/` (`%2F`) or `\`
/// (`%5C`) in a request path, as Envoy's `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forward them encoded (upper-cased); a backend that decodes them sees
    /// a different path than routes did.
    Keep,
    /// 400 Bad Request.
    #[default]
    Reject,
    /// Decode them to `/`, normalize, and answer 307 with the result.
    DecodeAndRedirect,
}

/// Protection against slow or oversized requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpLimits {
    /// Time allowed to receive a full request head (slowloris protection).
    #[serde(with = "duration_serde")]
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    #[serde(with = "duration_serde")]
    pub keepalive_timeout: Duration,
    /// Time a response's write may wait on a client that reads nothing
    /// (reset by any progress), then the connection closes.
    #[serde(with = "duration_serde")]
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_request_line: usize,
    /// Default request body limit (a route may set its own).
    pub max_body: u64,
    /// Requests served on one connection before it is closed (0: no limit).
    pub max_requests_per_connection: u32,
    /// Bytes of a chunked request body read and checked (framing) before
    /// the request goes upstream, so a malformed body never leaves half a
    /// request at the backend (0: forward at once).
    pub request_buffer: usize,
    /// Bytes of a response left unsent in the kernel per connection before
    /// a write waits (Linux `TCP_NOTSENT_LOWAT`; 0: the kernel's default,
    /// as much as the send buffer takes).
    pub tcp_notsent_lowat: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_request_line: 8 * 1024,
            max_body: 100 * 1024 * 1024,
            max_requests_per_connection: 0,
            request_buffer: 64 * 1024,
            tcp_notsent_lowat: 128 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpsListener {
    pub http: HttpListener,
    /// Offer HTTP/2 by ALPN (h2, then http/1.1).
    pub http2: bool,
    pub certificates: Vec<Certificate>,
    /// `tls.acme`: certificates obtained and renewed from an ACME CA.
    pub acme: Option<Acme>,
}

/// `tls.acme` of an https listener: one certificate for `domains`,
/// obtained from an ACME (RFC 8555) CA, kept under `state_dir` and renewed
/// before it expires, as Caddy and Traefik do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acme {
    /// The CA's directory URL (`https://…/directory`).
    pub directory: String,
    /// Contact for the account (`mailto:` is added); none: no contact.
    pub email: Option<String>,
    /// The names on the certificate, lower case; the first names the files.
    pub domains: Vec<String>,
    /// How the CA checks control of each name.
    pub challenge: AcmeChallenge,
    /// Where the account key, certificates and keys are kept.
    pub state_dir: PathBuf,
    /// Renew when this much validity is left; none: when a third is left
    /// (Let's Encrypt's advice; 30 of 90 days).
    #[serde(with = "crate::units::duration_serde::option")]
    pub renew_before: Option<Duration>,
    /// A PEM root that the directory's HTTPS certificate must chain to,
    /// instead of the system's (test CAs such as Pebble).
    pub ca: Option<PathBuf>,
}

/// RFC 8555 §8.3 and RFC 8737.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// `http-01`: the CA fetches `/.well-known/acme-challenge/TOKEN` on
    /// port 80 from an `http` listener.
    Http01,
    /// `tls-alpn-01`: the CA connects to port 443 of this listener with
    /// ALPN `acme-tls/1`.
    TlsAlpn01,
}

/// A certificate and key, served to clients whose SNI matches `server_names`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    /// Exact names or `*.example.com` wildcards. Empty: only as the default.
    pub server_names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Served when SNI is absent or matches no other certificate.
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpListener {
    pub pool: String,
    pub max_connections: usize,
    pub accept_proxy_protocol: bool,
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// New connections accepted per period; more are closed at once.
    pub connection_rate: Option<Rate>,
    /// Connections accepted at once (0: one period's worth, the rate's count).
    pub connection_burst: u32,
}
