//! Reading a cached body: from memory (a complete object or a fill still
//! arriving) or from disk, block by verified block. Every kind can seek, so
//! ranges are served from any of them.

use std::any::Any;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{HandleHit, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_error::{Error, ErrorType, Result};

use crate::disk::{BodyReader, DiskError, BLOCK};
use crate::fill::FillReader;
use crate::object::Tier;
use crate::storage::EdgeStorage;

pub(crate) enum HitBody {
    Memory {
        body: Bytes,
        start: usize,
        end: usize,
        done: bool,
    },
    Fill(FillReader),
    Disk(DiskStream),
}

pub(crate) struct DiskStream {
    pub storage: &'static EdgeStorage,
    pub key: String,
    /// Taken while a block is read on a blocking thread.
    pub reader: Option<BodyReader>,
    pub len: u64,
    pub pos: u64,
    pub end: u64,
}

impl DiskStream {
    async fn read(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let Some(reader) = self.reader.take() else {
            return Error::e_explain(ErrorType::InternalError, "disk reader lost");
        };
        let block = (self.pos / BLOCK as u64) as usize;
        let (reader, result) = tokio::task::spawn_blocking(move || {
            let r = reader.block(block);
            (reader, r)
        })
        .await
        .map_err(|e| Error::because(ErrorType::InternalError, "disk read task", e))?;
        self.reader = Some(reader);
        let data = match result {
            Ok(d) => d,
            Err(e) => {
                if matches!(e, DiskError::Corrupt { .. }) {
                    self.storage.drop_corrupt(&self.key, &e);
                }
                return Error::e_because(ErrorType::ReadError, "reading a cached body", e);
            }
        };
        let block_start = block as u64 * BLOCK as u64;
        let from = (self.pos - block_start) as usize;
        let to = ((self.end - block_start) as usize).min(data.len());
        if from >= to {
            return Error::e_explain(ErrorType::InternalError, "disk block shorter than recorded");
        }
        self.pos = block_start + to as u64;
        Ok(Some(data.slice(from..to)))
    }
}

/// A cache hit, and the tier it came from.
pub struct EdgeHit {
    pub tier: Tier,
    pub(crate) body: HitBody,
}

impl EdgeHit {
    pub(crate) fn memory(tier: Tier, body: Bytes) -> Self {
        let end = body.len();
        Self {
            tier,
            body: HitBody::Memory {
                body,
                start: 0,
                end,
                done: false,
            },
        }
    }
}

fn out_of_range(start: usize, len: usize) -> Result<()> {
    Error::e_explain(
        ErrorType::InternalError,
        format!("seek start out of range {start} >= {len}"),
    )
}

#[async_trait]
impl HandleHit for EdgeHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match &mut self.body {
            HitBody::Memory {
                body,
                start,
                end,
                done,
            } => {
                if *done || start >= end {
                    return Ok(None);
                }
                *done = true;
                Ok(Some(body.slice(*start..*end)))
            }
            HitBody::Fill(r) => r
                .read()
                .await
                .map_err(|e| Error::because(ErrorType::ReadError, "following a fill", e)),
            HitBody::Disk(d) => d.read().await,
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, from: usize, to: Option<usize>) -> Result<()> {
        match &mut self.body {
            HitBody::Memory {
                body,
                start,
                end,
                done,
            } => {
                if from >= body.len() {
                    return out_of_range(from, body.len());
                }
                *start = from;
                *end = to.map_or(body.len(), |t| t.min(body.len()));
                *done = false;
            }
            HitBody::Fill(r) => r.seek(from, to),
            HitBody::Disk(d) => {
                if from as u64 >= d.len {
                    return out_of_range(from, d.len as usize);
                }
                d.pos = from as u64;
                d.end = to.map_or(d.len, |t| (t as u64).min(d.len));
            }
        }
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        !matches!(self.body, HitBody::Fill(_))
    }

    fn get_eviction_weight(&self) -> usize {
        match &self.body {
            HitBody::Memory { body, .. } => body.len(),
            HitBody::Disk(d) => d.len as usize,
            HitBody::Fill(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
