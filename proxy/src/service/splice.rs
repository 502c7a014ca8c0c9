//! A pass-through's body moved from the backend's socket to the client's
//! through a pipe with splice(2) (issue 17), as HAProxy's
//! `option splice-response` does: the bytes go from one socket's receive
//! queue to the other's send queue by reference to the kernel's pages,
//! without the two copies a read into a buffer and a write out of it take
//! (about 40% of a 2 MiB pass-through's CPU: `_copy_to_iter` and
//! `_copy_from_iter` in `perf record` of the harness's load).
//!
//! Taken by the HTTP/1 shortcut's pass-through (`lean_pass.rs`) for what is
//! left of a `Content-Length` body once at least [`SPLICE_MIN`] bytes of it
//! are still on the backend's socket (what came with the head is read and
//! written first, and no more is read once that is out), when both sides
//! are plain TCP (no TLS) with empty buffers; anything else is read and
//! written as before, and so is a body no pipe can be had for.
//! The waits are the body's usual ones: the backend's under `read_timeout`,
//! the client's under the listener's `send_timeout`, `total` checked
//! before each step; the client is watched while the backend is awaited,
//! as the read loop watches it.
//!
//! Also a RAM hit's body from its read-only mapping (`edge_cache::mapped`)
//! to the client's socket ([`EdgeProxy::send_mapped`]): vmsplice(2) into a
//! pipe of its own pool, splice(2) into the socket, no copy of the body
//! into the socket's buffers (nginx's `sendfile` of its cache files).

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamH1;
use pingora_core::protocols::l4::splice::{Pipe, SealedPages};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, IO};
use tokio::io::AsyncReadExt;

use super::*;
use crate::listen::inspect::Inspector;
use crate::listen::WriteBuffered;

/// Bytes still on the backend's socket below which a body is read and
/// written rather than spliced: a splice step costs two system calls for
/// at most a pipe's 64 KiB, as a read and a write do for a read buffer's
/// 64 KiB; below this the two copies cost less than the pipe's page
/// references.
pub(super) const SPLICE_MIN: usize = 16 * 1024;

/// Pipes kept per worker thread for the next body: two descriptors each.
const PIPES_KEPT: usize = 16;

/// Pipes open at once in the process, in use or kept (HAProxy's
/// `maxpipes`): past this a body is read and written, as it is when the
/// process is out of descriptors (pipe2 fails).
const PIPES_MAX: usize = 1024;

/// Pipes open now.
static PIPES_OPEN: AtomicUsize = AtomicUsize::new(0);

/// What a pipe that bodies are sent into from memory is grown to
/// ([`EdgeProxy::send_mapped`]): one vmsplice and one splice per MiB rather
/// than per 64 KiB (a 2 MiB send from memory on loopback, C test of this
/// machine: 0.70x a write's kernel time with 64 KiB pipes, 0.50x with
/// 1 MiB). Such a pipe holds references to a body's pages, not memory of
/// its own; it is kept apart from the pass-through's pipes, which would
/// hold up to its size of a backend's bytes for a slow client.
const MEMORY_PIPE: usize = 1 << 20;

/// Pipes grown to [`MEMORY_PIPE`] open at once, at most: the kernel counts
/// a user's pipe pages (`/proc/sys/fs/pipe-user-pages-soft`, 16,384 pages
/// by default: 64 such pipes) and, past that, gives an unprivileged
/// user's new pipes one or two pages; 32 leave half of it to every other
/// pipe.
const GROWN_MAX: usize = 32;

/// Pipes grown now.
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// A pipe counted in [`PIPES_OPEN`] while it is open (and in [`GROWN`]
/// if it was grown).
struct Counted {
    pipe: Pipe,
    grown: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        PIPES_OPEN.fetch_sub(1, Ordering::Relaxed);
        if self.grown {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a pipe is for: each kind has its own pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A pass-through's body, socket to socket: the kernel's default size.
    Sockets,
    /// A body sent from memory: grown where it may be.
    Memory,
}

thread_local! {
    static PIPES: RefCell<Vec<Counted>> = const { RefCell::new(Vec::new()) };
    static MEMORY_PIPES: RefCell<Vec<Counted>> = const { RefCell::new(Vec::new()) };
}

fn pool(kind: Use) -> &'static std::thread::LocalKey<RefCell<Vec<Counted>>> {
    match kind {
        Use::Sockets => &PIPES,
        Use::Memory => &MEMORY_PIPES,
    }
}

/// An empty pipe for `kind`: one kept by this thread, or a new one (one
/// for memory grown to [`MEMORY_PIPE`] while fewer than [`GROWN_MAX`]
/// are); `None` when [`PIPES_MAX`] are open or none can be made.
fn take_pipe(kind: Use) -> Option<Counted> {
    if let Some(pipe) = pool(kind).with(|p| p.borrow_mut().pop()) {
        return Some(pipe);
    }
    if PIPES_OPEN.fetch_add(1, Ordering::Relaxed) >= PIPES_MAX {
        PIPES_OPEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let mut pipe = match Pipe::new() {
        Ok(pipe) => Counted { pipe, grown: false },
        Err(e) => {
            PIPES_OPEN.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "no pipe for a body: read and written instead");
            return None;
        }
    };
    if kind == Use::Memory {
        let room = GROWN.fetch_add(1, Ordering::Relaxed) < GROWN_MAX;
        match room.then(|| pipe.pipe.resize(MEMORY_PIPE)) {
            Some(Ok(_)) => pipe.grown = true,
            grew => {
                GROWN.fetch_sub(1, Ordering::Relaxed);
                if let Some(Err(e)) = grew {
                    tracing::debug!(error = %e, "a pipe not grown: bodies from memory go its size at a time");
                }
            }
        }
    }
    Some(pipe)
}

/// A pipe kept for the next body of its kind if it is empty (one that
/// holds bytes a failed write left is closed, with them).
fn give_back(pipe: Counted, kind: Use) {
    if pipe.pipe.held() == 0 {
        pool(kind).with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < PIPES_KEPT {
                p.push(pipe);
            }
        });
    }
}

/// The client's socket under its HTTP/1 stream when bytes may be spliced
/// into it: a plain TCP connection (`listen/http.rs` builds it as an
/// [`Inspector`] over a [`WriteBuffered`] socket; over TLS it is not).
fn client_writer(stream: &mut Stream) -> Option<&mut WriteBuffered<L4Stream>> {
    let io: &mut dyn IO = &mut **stream;
    let client = io
        .as_any_mut()
        .downcast_mut::<Inspector<WriteBuffered<L4Stream>>>()?;
    let writer = client.writer_mut();
    writer.spliceable().then_some(writer)
}

/// How a spliced body ended, if not whole.
pub(super) enum Cut {
    /// The backend's side failed (its error, as a body read gives it).
    Up(Box<Error>),
    /// The client's side failed, or the client went away.
    Down(Box<Error>),
    /// `total` passed with body still to come.
    Deadline,
}

/// Whether the rest of `h1`'s body may be spliced to `client`: at least
/// [`SPLICE_MIN`] bytes of a `Content-Length` body left on a plain
/// backend socket, a plain client socket.
pub(super) fn worth_it(h1: &mut UpstreamH1, client: &mut Stream) -> bool {
    h1.body_left_on_stream()
        .is_some_and(|left| left >= SPLICE_MIN)
        && client_writer(client).is_some()
}

/// The rest of `h1`'s body spliced to the client, step by step until it
/// ends: `body_out` counts what went to the client. `held` and `watch` are
/// the read loop's: while the backend is awaited the client is read, its
/// bytes kept (its next request) and its close ends the body. `Ok(true)`
/// once the whole body is out; `Ok(false)`: no pipe to be had, nothing
/// moved (the body is read and written instead).
pub(super) async fn body(
    h1: &mut UpstreamH1,
    client: &mut Stream,
    held: &mut BytesMut,
    watch: &mut bool,
    deadline: Option<Instant>,
    body_out: &mut u64,
) -> std::result::Result<bool, Cut> {
    let Some(mut pipe) = take_pipe(Use::Sockets) else {
        return Ok(false);
    };
    let ended = steps(&mut pipe.pipe, h1, client, held, watch, deadline, body_out).await;
    give_back(pipe, Use::Sockets);
    ended.map(|()| true)
}

async fn steps(
    pipe: &mut Pipe,
    h1: &mut UpstreamH1,
    client: &mut Stream,
    held: &mut BytesMut,
    watch: &mut bool,
    deadline: Option<Instant>,
    body_out: &mut u64,
) -> std::result::Result<(), Cut> {
    loop {
        if h1.is_body_done() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Cut::Deadline);
        }
        let filled = if *watch {
            tokio::select! {
                biased;
                filled = h1.splice_body(pipe) => filled,
                probe = client.read_buf(held) => match probe {
                    Ok(0) => return Err(Cut::Down(Error::explain(
                        ErrorType::ConnectionClosed,
                        "Prematurely before response body is complete",
                    ))),
                    Ok(_) => {
                        *watch = false;
                        continue;
                    }
                    Err(e) => return Err(Cut::Down(Error::because(
                        ErrorType::ReadError,
                        "during HTTP body-or-idle state",
                        e,
                    ))),
                },
            }
        } else {
            h1.splice_body(pipe).await
        };
        match filled {
            Ok(Some(_)) => {}
            // Not done, yet no longer spliceable: cannot happen once
            // begun (the backend's buffers stay empty).
            Ok(None) => {
                return Err(Cut::Up(Error::explain(
                    ErrorType::InternalError,
                    "the backend's stream can no longer be spliced from",
                )))
            }
            Err(e) => return Err(Cut::Up(e)),
        }
        while pipe.held() > 0 {
            let Some(writer) = client_writer(client) else {
                return Err(Cut::Down(Error::explain(
                    ErrorType::InternalError,
                    "the client's stream can no longer be spliced to",
                )));
            };
            match poll_fn(|cx| writer.poll_splice_from(cx, pipe)).await {
                Ok(n) => *body_out += n as u64,
                Err(e) => {
                    return Err(Cut::Down(Error::create(
                        ErrorType::WriteError,
                        ErrorSource::Downstream,
                        Some("while writing body".into()),
                        Some(Box::new(e)),
                    )))
                }
            }
        }
    }
}

impl EdgeProxy {
    /// A RAM hit's `body` sent to the client from its mapping: the head
    /// the stream buffers goes first, then the body's pages by reference
    /// (vmsplice(2) into a pipe, splice(2) into the socket), without the
    /// copy of each byte into the socket's buffers a write makes (nginx's
    /// `sendfile` of its cache files), counted in
    /// `edge_http_spliced_bytes_total`; `out` counts the body's bytes
    /// sent. Under the listener's `send_timeout`, with a write's errors.
    /// `None`: not taken, nothing of the body sent (the client is not
    /// plain TCP, no pipe is to be had, or the kernel refused the first
    /// step, as it refuses bytes not within `pages`): the caller writes
    /// it. The kernel may send the pages after this returns and after the
    /// object is gone: they are never written again (`SealedPages`).
    pub(crate) async fn send_mapped(
        &self,
        client: &mut Stream,
        pages: &SealedPages,
        body: &[u8],
        out: &mut u64,
    ) -> Option<std::io::Result<()>> {
        client_writer(client)?;
        let mut pipe = take_pipe(Use::Memory)?;
        let before = *out;
        let sent = send_steps(&mut pipe.pipe, client, pages, body, out).await;
        self.spliced.inc_by(*out - before);
        give_back(pipe, Use::Memory);
        match sent {
            Ok(()) => Some(Ok(())),
            Err(Failed::Refused) => None,
            Err(Failed::Io(e)) => Some(Err(e)),
        }
    }
}

/// How a send from memory failed.
enum Failed {
    /// The kernel refused the first step: nothing was sent.
    Refused,
    Io(std::io::Error),
}

/// `body` through `pipe` into the client, a pipe's size at a time.
async fn send_steps(
    pipe: &mut Pipe,
    client: &mut Stream,
    pages: &SealedPages,
    body: &[u8],
    out: &mut u64,
) -> std::result::Result<(), Failed> {
    let mut rest = body;
    while !rest.is_empty() {
        let n = match pipe.fill_from_sealed(pages, rest) {
            Ok(n) => n,
            Err(e) if rest.len() == body.len() => {
                tracing::debug!(error = %e, "vmsplice refused a body: written instead");
                return Err(Failed::Refused);
            }
            Err(e) => return Err(Failed::Io(e)),
        };
        if n == 0 {
            return Err(Failed::Io(std::io::ErrorKind::WriteZero.into()));
        }
        while pipe.held() > 0 {
            let Some(writer) = client_writer(client) else {
                return Err(Failed::Io(std::io::Error::other(
                    "the client's stream can no longer be spliced to",
                )));
            };
            let moved = poll_fn(|cx| writer.poll_splice_from(cx, pipe)).await;
            *out += moved.map_err(Failed::Io)? as u64;
        }
        rest = &rest[n..];
    }
    Ok(())
}
