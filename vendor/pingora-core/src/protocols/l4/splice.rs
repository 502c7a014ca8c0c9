// EDGE-PATCH (thirty-sixth): bytes moved from one TCP stream to another
// through a pipe with splice(2), never copied into user space (HAProxy's
// `option splice-response`). See EDGE-PATCH.md.
// EDGE-PATCH (thirty-seventh): a pipe filled from memory with vmsplice(2),
// and its size set with F_SETPIPE_SZ. See EDGE-PATCH.md.

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
    /// Bytes it can hold (what the kernel gave it, 64 KiB by default,
    /// until [`Pipe::resize`]).
    size: usize,
}

/// A new pipe's size on Linux: 16 pages.
const DEFAULT_SIZE: usize = 64 * 1024;

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
        // The size the kernel gave it: 64 KiB, or less for a user past
        // `pipe-user-pages-soft`.
        // SAFETY: an open descriptor we own; F_GETPIPE_SZ takes no argument.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            read,
            write,
            held: 0,
            size: usize::try_from(size).unwrap_or(DEFAULT_SIZE),
        })
    }

    /// Bytes it can hold.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Asks the kernel for a pipe of `bytes` (F_SETPIPE_SZ, rounded up to
    /// a power of two pages); returns the size it has now. Errors: those
    /// of fcntl(2) (`EPERM` past `/proc/sys/fs/pipe-max-size` or the
    /// user's `pipe-user-pages-soft` without `CAP_SYS_RESOURCE`, `EBUSY`
    /// below what it holds), the size unchanged.
    pub fn resize(&mut self, bytes: usize) -> io::Result<usize> {
        let want = libc::c_int::try_from(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size over 2 GiB"))?;
        // SAFETY: an open descriptor we own; F_SETPIPE_SZ takes an int.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.size = rc as usize;
        Ok(self.size)
    }

    /// Puts up to [`Self::size`] bytes of `data`, which must lie within
    /// `pages`, into the pipe, which must be empty, by reference to the
    /// pages (vmsplice(2) without `SPLICE_F_GIFT`: no copy); returns the
    /// bytes taken (1 or more unless `data` is empty). Never waits: an
    /// empty pipe has room. The kernel may send the bytes after `pages` is
    /// dropped: they stay as they were ([`SealedPages`]). Errors:
    /// `InvalidInput` if the pipe is not empty or `data` is not within
    /// `pages`; those of vmsplice(2).
    pub fn fill_from_sealed(&mut self, pages: &SealedPages, data: &[u8]) -> io::Result<usize> {
        let (start, end) = (pages.as_ptr() as usize, pages.as_ptr() as usize + pages.len());
        let at = data.as_ptr() as usize;
        if at < start || at + data.len() > end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes not within the sealed pages they are said to be in",
            ));
        }
        // SAFETY: `data` is within sealed pages, never written again and
        // unmapped, not reused, when dropped.
        unsafe { self.fill_from_memory(data) }
    }

    /// [`Self::fill_from_sealed`] of any memory.
    ///
    /// # Safety
    ///
    /// The kernel keeps references to the pages under `data` after this
    /// returns, for as long as the bytes are in the pipe and then in the
    /// socket's queues they are drained into (until the peer has them):
    /// the caller guarantees that no byte of those pages is written
    /// again while that may be, by anyone. Memory of an allocator, which
    /// hands freed bytes to its next caller, does not qualify; a mapping
    /// of its own that is only ever read, and unmapped (not reused) when
    /// done with, does (unmapping drops the process's reference; the
    /// kernel's keep the pages, unchanged, until they are sent).
    unsafe fn fill_from_memory(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.held != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a pipe is filled only when empty",
            ));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len().min(self.size),
        };
        // SAFETY: `iov` points into `data`, valid for the call; what the
        // kernel keeps past it is the caller's guarantee above.
        let n = unsafe {
            libc::vmsplice(
                self.write.as_raw_fd(),
                &iov,
                1,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.held = n as usize;
        Ok(self.held)
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

/// Bytes in an anonymous private mapping of their own, written once when
/// made and read-only from then on (mprotect(2)), unmapped when dropped
/// and never reused by an allocator: pages of it the kernel holds (a pipe
/// filled with [`Pipe::fill_from_sealed`], a socket's queue it was drained
/// into) keep what they held until sent, whatever happens to this after.
pub struct SealedPages(memmap2::Mmap);

impl SealedPages {
    /// A mapping of `len` bytes (1 or more) that `write` fills, sealed
    /// read-only. `Ok(None)`: no mapping could be had (mmap(2) or
    /// mprotect(2) failed: `ENOMEM`, the map count); the caller keeps the
    /// bytes elsewhere. Errors: `write`'s.
    pub fn new<E>(len: usize, write: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<Option<SealedPages>, E> {
        if len == 0 {
            return Ok(None);
        }
        let Ok(mut map) = memmap2::MmapMut::map_anon(len) else {
            return Ok(None);
        };
        write(&mut map)?;
        Ok(map.make_read_only().ok().map(SealedPages))
    }
}

impl std::ops::Deref for SealedPages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SealedPages {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SealedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedPages").field("len", &self.0.len()).finish()
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

    /// Bytes put into the pipe from memory come out of the socket whole
    /// and in order, with pipes of the default size and of 1 MiB, from
    /// offsets that are not page-aligned; a pipe that holds bytes refuses
    /// more.
    #[tokio::test]
    async fn bytes_pass_from_memory_to_socket_whole_and_in_order() {
        for size in [None, Some(1 << 20)] {
            let (mut reader, mut to) = pair().await;
            let bytes: Vec<u8> = (0..3_000_001u32).map(|i| (i * 13 + i / 509) as u8).collect();
            let body = SealedPages::new(bytes.len(), |m| {
                m.copy_from_slice(&bytes);
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
            let want = bytes[5..].to_vec();
            let recv = tokio::spawn(async move {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).await.unwrap();
                got
            });
            let mut pipe = Pipe::new().unwrap();
            if let Some(size) = size {
                // Root, or within the user's limits: the size asked.
                assert_eq!(pipe.resize(size).unwrap(), size);
            }
            assert_eq!(pipe.size(), size.unwrap_or(DEFAULT_SIZE));
            let mut at = 5;
            while at < body.len() {
                let n = pipe.fill_from_sealed(&body, &body[at..]).unwrap();
                assert!(n > 0 && n <= pipe.size());
                let again = pipe.fill_from_sealed(&body, &body[at..]);
                assert_eq!(again.unwrap_err().kind(), io::ErrorKind::InvalidInput);
                while pipe.held() > 0 {
                    poll_fn(|cx| pipe.poll_drain(cx, &mut to)).await.unwrap();
                }
                at += n;
            }
            // Dropped (unmapped) before the reader has it all: what the
            // kernel holds is sent as it was.
            drop(body);
            drop(to);
            assert!(recv.await.unwrap() == want);
        }
    }

    /// Bytes outside the sealed pages named are refused; nothing of
    /// length 0 is sealed.
    #[test]
    fn only_bytes_within_sealed_pages_are_put_into_a_pipe() {
        let pages = SealedPages::new(10_000, |m| {
            m.fill(1);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        let other = vec![1u8; 100];
        let mut pipe = Pipe::new().unwrap();
        for data in [&other[..], &other[99..]] {
            let refused = pipe.fill_from_sealed(&pages, data);
            assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(pipe.held(), 0);
        assert_eq!(pipe.fill_from_sealed(&pages, &pages[9_000..]).unwrap(), 1_000);
        assert!(SealedPages::new(0, |_| Ok::<_, ()>(())).unwrap().is_none());
        let failed = SealedPages::new(5, |_| Err("no"));
        assert_eq!(failed.unwrap_err(), "no");
    }
}
