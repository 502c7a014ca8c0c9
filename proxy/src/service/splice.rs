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
//! are still on the backend's socket, when both sides are plain TCP (no
//! TLS) with empty buffers; anything else is read and written as before.
//! The waits are the body's usual ones: the backend's under `read_timeout`,
//! the client's under the listener's `send_timeout`, `total` checked
//! before each step; the client is watched while the backend is awaited,
//! as the read loop watches it.

use std::cell::RefCell;
use std::future::poll_fn;

use bytes::BytesMut;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamH1;
use pingora_core::protocols::l4::splice::Pipe;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, IO};
use tokio::io::AsyncReadExt;

use super::*;
use crate::listen::inspect::Inspector;
use crate::listen::WriteBuffered;

/// Bytes still on the backend's socket below which a body is read and
/// written rather than spliced: a splice step costs two system calls for
/// at most a pipe's 64 KiB, a read and a write the same for a read
/// buffer's 64 KiB, so the copies saved must be worth the pipe.
pub(super) const SPLICE_MIN: usize = 64 * 1024;

/// Pipes kept per worker thread for the next body (HAProxy's `maxpipes`
/// in spirit): two descriptors each.
const PIPES_KEPT: usize = 16;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe: one kept by this thread, or a new one.
fn take_pipe() -> std::io::Result<Pipe> {
    match PIPES.with(|p| p.borrow_mut().pop()) {
        Some(pipe) => Ok(pipe),
        None => Pipe::new(),
    }
}

/// A pipe kept for the next body if it is empty (one that holds bytes a
/// failed write left is closed, with them).
fn give_back(pipe: Pipe) {
    if pipe.held() == 0 {
        PIPES.with(|p| {
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
/// bytes kept (its next request) and its close ends the body. `Ok` once
/// the whole body is out.
pub(super) async fn body(
    h1: &mut UpstreamH1,
    client: &mut Stream,
    held: &mut BytesMut,
    watch: &mut bool,
    deadline: Option<Instant>,
    body_out: &mut u64,
) -> std::result::Result<(), Cut> {
    let mut pipe = take_pipe().map_err(|e| {
        Cut::Up(Error::because(
            ErrorType::InternalError,
            "a pipe for the body",
            e,
        ))
    })?;
    let ended = steps(&mut pipe, h1, client, held, watch, deadline, body_out).await;
    give_back(pipe);
    ended
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
