//! An object being filled from upstream, readable while it arrives: the
//! request that fetches it and every request coalesced onto it read the
//! same chunks as they come.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::object::{Meta, ObjectInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
    Failed,
}

struct Body {
    chunks: Vec<Bytes>,
    /// Offset of each chunk.
    starts: Vec<usize>,
    len: usize,
    state: State,
}

pub struct Fill {
    pub id: u64,
    pub meta: Meta,
    pub info: ObjectInfo,
    body: Mutex<Body>,
    changed: watch::Sender<u64>,
    purged: AtomicBool,
}

impl Fill {
    pub fn new(id: u64, meta: Meta, info: ObjectInfo) -> Self {
        Self {
            id,
            meta,
            info,
            body: Mutex::new(Body {
                chunks: Vec::new(),
                starts: Vec::new(),
                len: 0,
                state: State::Open,
            }),
            changed: watch::channel(0).0,
            purged: AtomicBool::new(false),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn push(&self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        {
            let mut b = self.body.lock();
            if b.state != State::Open {
                return;
            }
            let at = b.len;
            b.starts.push(at);
            b.len += data.len();
            b.chunks.push(data);
        }
        self.bump();
    }

    /// The whole body so far, as one buffer: in a mapping of its own when
    /// it is long (`mapped.rs`), else one piece shared or the pieces
    /// copied together.
    pub fn contents(&self) -> crate::mapped::Body {
        let b = self.body.lock();
        crate::mapped::joined(&b.chunks)
    }

    pub fn len(&self) -> usize {
        self.body.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(&self) {
        self.set_state(State::Done);
    }

    /// Readers waiting for more get an error: the body is incomplete.
    pub fn fail(&self) {
        self.set_state(State::Failed);
    }

    fn set_state(&self, s: State) {
        {
            let mut b = self.body.lock();
            if b.state == State::Open {
                b.state = s;
            }
        }
        self.bump();
    }

    /// A purge named it: it must not be installed when it completes.
    pub fn mark_purged(&self) {
        self.purged.store(true, Ordering::Relaxed);
    }

    pub fn is_purged(&self) -> bool {
        self.purged.load(Ordering::Relaxed)
    }

    pub fn reader(self: &Arc<Self>) -> FillReader {
        FillReader {
            fill: self.clone(),
            changed: self.changed.subscribe(),
            pos: 0,
            end: None,
        }
    }
}

/// Reads a fill from a byte offset, waiting for bytes not yet arrived.
pub struct FillReader {
    fill: Arc<Fill>,
    changed: watch::Receiver<u64>,
    pos: usize,
    end: Option<usize>,
}

/// The fill this reader follows failed before it was complete.
#[derive(Debug, thiserror::Error)]
#[error("the upstream fill this response was following failed after {0} bytes")]
pub struct FillFailed(pub usize);

enum Step {
    Data(Bytes),
    End,
    Wait,
}

impl FillReader {
    /// Reads `[start, end)` from now on (`end` past the body is clipped).
    pub fn seek(&mut self, start: usize, end: Option<usize>) {
        self.pos = start;
        self.end = end;
    }

    fn step(&mut self) -> Result<Step, FillFailed> {
        let b = self.fill.body.lock();
        let end = self.end.unwrap_or(usize::MAX);
        if self.pos >= end {
            return Ok(Step::End);
        }
        if self.pos < b.len {
            let i = b.starts.partition_point(|s| *s <= self.pos) - 1;
            let chunk = &b.chunks[i];
            let off = self.pos - b.starts[i];
            let take = (chunk.len() - off).min(end - self.pos);
            self.pos += take;
            return Ok(Step::Data(chunk.slice(off..off + take)));
        }
        match b.state {
            State::Done => Ok(Step::End),
            State::Failed => Err(FillFailed(b.len)),
            State::Open => Ok(Step::Wait),
        }
    }

    pub async fn read(&mut self) -> Result<Option<Bytes>, FillFailed> {
        loop {
            // Mark the current version seen before looking, so a change
            // after the look wakes the wait below.
            self.changed.borrow_and_update();
            match self.step()? {
                Step::Data(d) => return Ok(Some(d)),
                Step::End => return Ok(None),
                Step::Wait => {
                    if self.changed.changed().await.is_err() {
                        // The sender lives in the fill this reader holds:
                        // unreachable, but never wait forever.
                        return Err(FillFailed(self.pos));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> Arc<Fill> {
        Arc::new(Fill::new(1, (vec![], vec![]), ObjectInfo::default()))
    }

    #[tokio::test]
    async fn readers_follow_the_writer_and_see_the_end() {
        let f = fill();
        let mut r = f.reader();
        let writer = {
            let f = f.clone();
            tokio::spawn(async move {
                for i in 0..5u8 {
                    f.push(Bytes::from(vec![i; 3]));
                    tokio::task::yield_now().await;
                }
                f.finish();
            })
        };
        let mut got = Vec::new();
        while let Some(d) = r.read().await.unwrap() {
            got.extend_from_slice(&d);
        }
        writer.await.unwrap();
        assert_eq!(got, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        // A ranged reader starting mid-chunk.
        let mut r = f.reader();
        r.seek(4, Some(8));
        let mut got = Vec::new();
        while let Some(d) = r.read().await.unwrap() {
            got.extend_from_slice(&d);
        }
        assert_eq!(got, [1, 1, 2, 2]);
        assert_eq!(
            &f.contents().bytes()[..],
            &[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        );
    }

    #[tokio::test]
    async fn a_failed_fill_is_an_error_not_an_end() {
        let f = fill();
        f.push(Bytes::from_static(b"abc"));
        let mut r = f.reader();
        assert_eq!(r.read().await.unwrap().as_deref(), Some(&b"abc"[..]));
        f.fail();
        assert!(r.read().await.is_err());
    }
}
