//! edge's cache: a RAM tier (S3-FIFO) and a disk tier behind pingora-cache's
//! `Storage`, cache keys, the RFC 9111 + video policy, and purge.

pub mod age;
pub mod digest;
pub mod disk;
pub mod fill;
pub mod hit;
pub mod index;
pub mod key;
pub mod manifest;
pub mod mapped;
pub mod metrics;
pub mod object;
pub mod policy;
pub mod ram;
pub mod storage;
pub mod video;

pub use hit::EdgeHit;
pub use metrics::{CacheMetrics, PrefetchOutcome, Status, TierCollector};
pub use object::Tier;
pub use storage::{EdgeStorage, FillHints, PreparedCache, PurgeMode};
