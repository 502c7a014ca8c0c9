//! A raw HTTP/1 connection, plain or TLS, for sending exact bytes and
//! reading responses as they come: what a hostile or old client does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a read may wait: a hang is a failure, not a result.
const WAIT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line's reason phrase (after the code and its space).
    pub reason: String,
    /// Fields in order, names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The response says the connection closes.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that sends bytes as given.
pub struct RawConn {
    io: Pin<Box<dyn Io>>,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the node");
        tcp.set_nodelay(true).expect("nodelay");
        Self::new(Box::pin(tcp))
    }

    /// TLS with SNI `sni`, trusting `ca_pem`, offering HTTP/1.1 only.
    pub async fn connect_tls(addr: SocketAddr, sni: &str, ca_pem: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let mut pem = ca_pem.as_bytes();
        for cert in rustls_pemfile::certs(&mut pem) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the node");
        let name = ServerName::try_from(sni.to_string()).expect("SNI");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        Self::new(Box::pin(tls))
    }

    /// TLS as [`RawConn::connect_tls`], with every write of the client's
    /// TLS bytes (the handshake too) cut into pieces of at most `piece`
    /// bytes, each its own segment (no Nagle), `pause` between them: the
    /// server reads its records in parts, a record's header on its own,
    /// as a slow or lossy network hands them over.
    pub async fn connect_tls_in_pieces(
        addr: SocketAddr,
        sni: &str,
        ca_pem: &str,
        piece: usize,
        pause: Duration,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let mut pem = ca_pem.as_bytes();
        for cert in rustls_pemfile::certs(&mut pem) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the node");
        tcp.set_nodelay(true).expect("nodelay");
        let pieces = Pieces {
            inner: tcp,
            piece: piece.max(1),
            pause,
            sleep: None,
        };
        let name = ServerName::try_from(sni.to_string()).expect("SNI");
        let tls = connector
            .connect(name, pieces)
            .await
            .expect("TLS handshake");
        Self::new(Box::pin(tls))
    }

    fn new(io: Pin<Box<dyn Io>>) -> Self {
        Self {
            io,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // A peer that already closed may reset the write: what is read next tells.
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// More bytes, or false at the end of the stream; an error after `WAIT`.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(WAIT, self.io.read(&mut chunk)).await {
            Err(_) => Err(format!("no answer within {WAIT:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    async fn line(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads one response; `head_only` for an answer to HEAD. `Err` when
    /// the connection ends before a response, or nothing comes in time.
    pub async fn response(&mut self, head_only: bool) -> Result<RawResponse, String> {
        let status_line = self
            .line()
            .await?
            .ok_or("the connection closed before a response")?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self
                .line()
                .await?
                .ok_or("the connection closed in a head")?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or(format!("bad header line {line:?}"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let reason = status_line.splitn(3, ' ').nth(2).unwrap_or("").to_string();
        let mut resp = RawResponse {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = self.line().await?.ok_or("closed in a chunked body")?;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                if size == 0 {
                    while self.line().await?.is_some_and(|l| !l.is_empty()) {}
                    return Ok(resp);
                }
                while self.buf.len() < size + 2 {
                    if !self.fill().await? {
                        return Err("closed in a chunk".into());
                    }
                }
                resp.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        }
        if let Some(n) = resp.header("content-length") {
            let n: usize = n.parse().map_err(|_| format!("bad Content-Length {n:?}"))?;
            while self.buf.len() < n {
                if !self.fill().await? {
                    return Err("closed in a body".into());
                }
            }
            resp.body = self.buf.drain(..n).collect();
            return Ok(resp);
        }
        // Delimited by the end of the connection.
        while self.fill().await? {}
        resp.body = std::mem::take(&mut self.buf);
        Ok(resp)
    }

    /// Exactly `n` more bytes (after a switch of protocols, say).
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(format!("closed after {} of {n} bytes", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads the bytes up to and including `marker` (e.g. the end of an
    /// interim `100 Continue`).
    pub async fn read_until(&mut self, marker: &[u8]) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(marker.len()).position(|w| w == marker) {
                return Ok(self.buf.drain(..i + marker.len()).collect());
            }
            if !self.fill().await? {
                return Err(format!(
                    "closed before {:?}",
                    String::from_utf8_lossy(marker)
                ));
            }
        }
    }

    /// Waits for the server to close: true at the end of the stream, false
    /// if bytes arrive instead or nothing happens for `WAIT`.
    pub async fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        matches!(self.fill().await, Ok(false))
    }
}

/// A TCP stream whose writes take at most `piece` bytes each, `pause`
/// apart ([`RawConn::connect_tls_in_pieces`]).
struct Pieces {
    inner: tokio::net::TcpStream,
    piece: usize,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(sleep) = self.sleep.as_mut() {
            std::task::ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let n = buf.len().min(self.piece);
        let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]));
        if written.is_ok() && !self.pause.is_zero() {
            self.sleep = Some(Box::pin(tokio::time::sleep(self.pause)));
        }
        std::task::Poll::Ready(written)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
