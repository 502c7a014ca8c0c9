// EDGE-PATCH (thirty-sixth): bytes moved from one TCP stream to another
// through a pipe with splice(2), never copied into user space (HAProxy's
// `option splice-response`). See EDGE-PATCH.md.

//! A pipe between two TCP [`Stream`]s: [`Pipe::poll_fill`] moves bytes
//! from a socket's receive queue into the pipe, [`Pipe::poll_drain`] from
//! the pipe into a socket's send queue, each by reference to the kernel's
//! pages (splice(2), `SPLICE_F_NONBLOCK`), so a body passed through costs
//! neither of the two copies a read into a buffer and a write out of it
//! take.
//!
//! Readiness is the streams' own (tokio's reactor): a fill waits until the
//! source is readable, a drain until the destination is writable, and a
//! `WouldBlock` clears that readiness as a read or write would. A fill is
//! only made into an empty pipe, so its `EAGAIN` always means the socket
//! had nothing (an empty pipe has room for at least one buffer), never a
//! full pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{ready, Context, Poll};

use tokio::io::Interest;

use super::stream::Stream;

/// A pipe's two ends and the bytes it holds.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    /// A new non-blocking pipe of the kernel's default size (64 KiB on
    /// Linux). Errors: those of pipe2(2) (`EMFILE`, `ENFILE`).
    pub fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Bytes in the pipe, moved in and not yet out.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves up to `max` bytes (1 or more) from `from`'s socket into the
    /// pipe, which must be empty ([`Self::held`] 0), waiting until the
    /// socket is readable. `Ready(Ok(0))`: the peer closed its side.
    /// Errors: `InvalidInput` if the pipe is not empty or `from` is not a
    /// TCP socket with nothing rewound or buffered ([`Stream::spliceable_from`]); those of
    /// splice(2).
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        if self.held != 0 || max == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a pipe is filled only when empty, with 1 byte or more",
            )));
        }
        let Some(tcp) = from.splice_source() else {
            return Poll::Ready(Err(not_spliceable()));
        };
        let pipe = self.write.as_raw_fd();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let moved = tcp.try_io(Interest::READABLE, || splice(tcp.as_raw_fd(), pipe, max));
            match moved {
                Ok(n) => {
                    self.held = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves what the pipe holds (some or all) into `to`'s socket, waiting
    /// until it is writable; returns the bytes moved (1 or more; 0 only if
    /// the pipe held nothing). Errors: `InvalidInput` if `to` is not a TCP
    /// socket with nothing buffered ([`Stream::spliceable_to`]); those of splice(2) (`EPIPE`,
    /// `ECONNRESET` once the peer is gone).
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, to: &mut Stream) -> Poll<io::Result<usize>> {
        if self.held == 0 {
            return Poll::Ready(Ok(0));
        }
        let Some(tcp) = to.splice_destination() else {
            return Poll::Ready(Err(not_spliceable()));
        };
        let pipe = self.read.as_raw_fd();
        loop {
            ready!(tcp.poll_write_ready(cx))?;
            let held = self.held;
            let moved = tcp.try_io(Interest::WRITABLE, || splice(pipe, tcp.as_raw_fd(), held));
            match moved {
                Ok(n) => {
                    self.held -= n.min(self.held);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn not_spliceable() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a TCP socket with empty buffers on that side",
    )
}

/// One splice(2) of up to `len` bytes, non-blocking on the pipe's side
/// (the socket is non-blocking already).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call (borrowed from owners
    // that outlive it); null offsets are what splice(2) takes for pipes
    // and sockets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, Stream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, Stream::from(b))
    }

    /// Bytes written to one socket come out of the other whole and in
    /// order, through the pipe, in steps of any size; the peer's close is
    /// a fill of 0.
    #[tokio::test]
    async fn bytes_pass_from_socket_to_socket_whole_and_in_order() {
        let (mut writer, mut from) = pair().await;
        let (mut reader, mut to) = pair().await;
        let body: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = body.clone();
        let send = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let recv = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pipe = Pipe::new().unwrap();
        let mut moved = 0;
        for step in [1usize, 7, 4096, 65_536, 1 << 20].iter().cycle() {
            let n = poll_fn(|cx| pipe.poll_fill(cx, &mut from, *step))
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= *step);
            while pipe.held() > 0 {
                moved += poll_fn(|cx| pipe.poll_drain(cx, &mut to)).await.unwrap();
            }
        }
        assert_eq!(moved, body.len());
        drop(to);
        send.await.unwrap();
        assert!(recv.await.unwrap() == body);
    }

    /// A pipe that holds bytes is not filled; a stream with bytes rewound
    /// in front of its socket is not spliced from.
    #[tokio::test]
    async fn a_held_pipe_and_a_buffered_stream_are_refused() {
        let (mut writer, mut from) = pair().await;
        writer.write_all(b"abc").await.unwrap();
        let mut pipe = Pipe::new().unwrap();
        assert_eq!(
            poll_fn(|cx| pipe.poll_fill(cx, &mut from, 2))
                .await
                .unwrap(),
            2
        );
        let refused = poll_fn(|cx| pipe.poll_fill(cx, &mut from, 1)).await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let (_w, mut rewound) = pair().await;
        rewound.rewind(b"x");
        let mut empty = Pipe::new().unwrap();
        let refused = poll_fn(|cx| empty.poll_fill(cx, &mut rewound, 1)).await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
