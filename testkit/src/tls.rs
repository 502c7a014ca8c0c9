//! TLS for tests: certificates made on the spot (rcgen) and a client that
//! reports what was negotiated.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority and certificates it signs.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and key, in PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(params, key);
        Self { cert, issuer }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// What a TLS request saw.
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub body: Bytes,
    pub alpn: Option<Vec<u8>>,
    pub version: http::Version,
    /// The server's leaf certificate (DER).
    pub peer_cert: Vec<u8>,
    pub headers: http::HeaderMap,
}

/// One request over a fresh TLS connection to `addr` with SNI `sni`,
/// trusting `ca_pem`, offering `alpn`.
pub async fn get(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
    path: &str,
) -> Result<TlsResponse, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let negotiated = conn.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let req = Request::builder()
        .uri(format!("https://{sni}{path}"))
        .header("host", sni)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(tls);
    let resp = if negotiated.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(TlsResponse {
        status: parts.status.as_u16(),
        body,
        alpn: negotiated,
        version: parts.version,
        peer_cert,
        headers: parts.headers,
    })
}

/// A TLS client connection over `io` (any byte stream: a socket, or a
/// wrapper such as [`crate::Stall`]) with SNI `sni`, trusting `ca_pem`,
/// offering `alpn`; the handshake done.
pub async fn connect<IO>(
    io: IO,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<IO>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    connector
        .connect(name, io)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .flatten()
        .collect()
}

/// TLS application-data records (content type 23) seen in a stream's raw
/// bytes, counted as they are read: what a server seals per response.
struct RecordCounter {
    inner: tokio::net::TcpStream,
    /// Bytes of the current record's header read so far, and the header.
    header: ([u8; 5], usize),
    /// Bytes of the current record's body still to come.
    body_left: usize,
    records: usize,
}

impl RecordCounter {
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let (h, got) = &mut self.header;
            let n = (5 - *got).min(bytes.len());
            h[*got..*got + n].copy_from_slice(&bytes[..n]);
            *got += n;
            bytes = &bytes[n..];
            if *got == 5 {
                if h[0] == 23 {
                    self.records += 1;
                }
                self.body_left = usize::from(u16::from_be_bytes([h[3], h[4]]));
                *got = 0;
            }
        }
    }
}

impl tokio::io::AsyncRead for RecordCounter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            let fresh = buf.filled()[before..].to_vec();
            self.saw(&fresh);
        }
        r
    }
}

impl tokio::io::AsyncWrite for RecordCounter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One response of [`records_per_response`].
#[derive(Debug)]
pub struct RecordsSeen {
    pub status: u16,
    pub body_len: usize,
    /// TLS application-data records that carried it.
    pub records: usize,
    pub x_cache: Option<String>,
}

/// `GET`s of `paths` in turn on one HTTP/1.1 keep-alive TLS connection to
/// `addr` (SNI and `Host` `sni`, trusting `ca_pem`): per response, its
/// status, body length, `X-Cache` and how many TLS application-data
/// records carried it. Responses must have a `Content-Length`.
pub async fn records_per_response(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    paths: &[&str],
) -> Result<Vec<RecordsSeen>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let counter = RecordCounter {
        inner: tcp,
        header: ([0; 5], 0),
        body_left: 0,
        records: 0,
    };
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, counter)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for path in paths {
        let records_before = tls.get_ref().0.records;
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 16384];
        let (status, body_len, x_cache) = loop {
            let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a response".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&buf).map_err(|e| e.to_string())? {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .ok_or("no Content-Length")?;
                let x_cache = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("x-cache"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                while buf.len() < head + len {
                    let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("closed in a body".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..head + len);
                break (status, len, x_cache);
            }
        };
        out.push(RecordsSeen {
            status,
            body_len,
            records: tls.get_ref().0.records - records_before,
            x_cache,
        });
    }
    Ok(out)
}
