//! The vendored pingora-core's response-head spare (EDGE-PATCH
//! forty-first): a session kept for reuse gives back the buffer its last
//! head was read into, when nothing still shares it, and the next head
//! read on the thread goes into it. Here because the vendored crate's own
//! tests are not built with the workspace. A real backend on loopback.

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::{holds_head_spare, HttpSession, RawTask};
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::Stream;
use pingora_http::RequestHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";

/// A backend answering every request head on each connection with
/// [`ANSWER`]; its address.
async fn backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if sock.write_all(ANSWER).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One exchange on `session`: the head's first field name's address (in
/// the buffer the head was read into), the head itself if `keep`, and
/// the body.
async fn exchange(session: &mut HttpSession, keep: bool) -> (usize, Option<RawTask>, Vec<u8>) {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("Host", "backend.test").unwrap();
    session.write_request_header(Box::new(req)).await.unwrap();
    session.finish_body().await.unwrap();
    let task = session.read_response_task_raw().await.unwrap();
    let (at, done) = match &task {
        RawTask::Head(head, done) => {
            let (name, _) = head.fields().next().unwrap();
            assert_eq!(name, b"Content-Length");
            (name.as_ptr() as usize, *done)
        }
        RawTask::Task(other) => panic!("not a head: {other:?}"),
    };
    let kept = keep.then_some(task);
    let mut body = Vec::new();
    if !done {
        loop {
            match session.read_response_task().await.unwrap() {
                HttpTask::Body(Some(piece), end) => {
                    body.extend_from_slice(&piece);
                    if end {
                        break;
                    }
                }
                HttpTask::Body(None, true) | HttpTask::Done => break,
                HttpTask::Body(None, false) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    (at, kept, body)
}

/// `session`'s connection kept, in a new session; `spare`: whether the
/// thread holds a spare head buffer then.
fn again(mut session: HttpSession, spare: bool) -> HttpSession {
    session.respect_keepalive();
    let stream = session.into_reusable().ok().expect("kept alive");
    assert_eq!(holds_head_spare(), spare);
    HttpSession::new(stream)
}

/// Sessions one after another on a kept connection read each head into
/// the buffer the last one gave back; a head still alive keeps its
/// buffer (not given back: the next read takes a new one) and its bytes.
#[tokio::test]
async fn a_kept_session_gives_its_head_buffer_to_the_next_read() {
    let addr = backend().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tcp = pingora_core::protocols::l4::stream::Stream::from(tcp);
    let mut session = HttpSession::new(Box::new(tcp) as Stream);
    assert!(!holds_head_spare());
    let (first, _, body) = exchange(&mut session, false).await;
    assert_eq!(body, b"hello");
    let mut session = again(session, true);
    let (second, _, body) = exchange(&mut session, false).await;
    assert!(!holds_head_spare(), "taken by the read");
    assert_eq!(body, b"hello");
    assert_eq!(second, first, "the buffer given back is read into");

    // This head outlives its session: its buffer is not given back.
    let mut session = again(session, true);
    let (third, kept, _) = exchange(&mut session, true).await;
    assert_eq!(third, first);
    let mut session = again(session, false);
    let (fourth, _, body) = exchange(&mut session, false).await;
    assert_eq!(body, b"hello");
    assert_ne!(fourth, third, "a shared buffer is not reused");
    let Some(RawTask::Head(head, _)) = kept else {
        panic!("kept a head");
    };
    let fields: Vec<(Bytes, Bytes)> = head
        .fields()
        .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                Bytes::from_static(b"Content-Length"),
                Bytes::from_static(b"5")
            ),
            (Bytes::from_static(b"X-A"), Bytes::from_static(b"b")),
        ],
        "the kept head's bytes are intact"
    );
    again(session, true);
}
