//! Scheduled prefill (`POST /cache/prefill`, `edge prefill`): a list of
//! object URLs, or HLS/DASH manifests expanded to every segment of the
//! chosen renditions, fetched through this node's own HTTP listener (so
//! routes, the cache and the site's upstream plan apply as to a client)
//! inside a local time window and under a bandwidth cap (the site's: each
//! of its N nodes fills at 1/N of it).
//!
//! Each object is asked with `edge-prefill`: a node of a site answers 421
//! for an object another node owns, so each node fills what it owns and a
//! site fills each object once (run the job on every node). An object
//! already fresh here is a hit: counted, its body not read. The job is
//! kept in a file (`prefill.json` in `[cache].disk_path`, else the
//! temporary directory) until it ends, and a node that restarts resumes
//! it from the object it had reached.

mod fetch;
mod pace;
pub mod spec;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::runtime::Runtime;
use fetch::Outcome;
pub use spec::Spec;

/// Errors kept for `GET /cache/prefill` (the latest).
const ERRORS_KEPT: usize = 20;

/// A job as kept on disk: what was asked, and how far it got.
#[derive(Serialize, Deserialize)]
struct Saved {
    spec: Spec,
    /// Objects before this one (in expansion order) are done.
    next: usize,
}

#[derive(Default)]
struct Progress {
    phase: Mutex<&'static str>,
    objects: AtomicU64,
    done: AtomicU64,
    fetched: AtomicU64,
    fresh: AtomicU64,
    not_owned: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// When bytes began to flow (after the window opened).
    started: Mutex<Option<Instant>>,
    errors: Mutex<VecDeque<String>>,
}

impl Progress {
    fn error(&self, e: String) {
        let mut errors = self.errors.lock();
        if errors.len() == ERRORS_KEPT {
            errors.pop_front();
        }
        errors.push_back(e);
    }
}

struct Job {
    spec: Spec,
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<()>,
}

/// The node's prefill: at most one job at a time.
pub struct Prefill {
    job: Mutex<Option<Job>>,
    /// The current job's number; its state file is written and removed
    /// under this lock, and only by the current job (a stopped or
    /// replaced one, still finishing a step, must not bring it back).
    current: Mutex<u64>,
    objects: IntCounterVec,
    bytes: IntCounter,
}

impl Prefill {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let objects = IntCounterVec::new(
            Opts::new(
                "edge_prefill_objects_total",
                "Objects a prefill job went through, by result (fetched, fresh, not_owned, failed)",
            ),
            &["result"],
        )?;
        let bytes = IntCounter::new(
            "edge_prefill_bytes_total",
            "Response body bytes prefill jobs fetched",
        )?;
        registry.register(Box::new(objects.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Self {
            job: Mutex::new(None),
            current: Mutex::new(0),
            objects,
            bytes,
        })
    }

    /// Where a job is kept until it ends.
    fn path(rt: &Runtime) -> PathBuf {
        let config = rt.config();
        match config.cache.disk.as_ref() {
            Some(d) => d.path.join("prefill.json"),
            None => std::env::temp_dir()
                .join(format!("edge-prefill-{}.json", config.admin.listen.port())),
        }
    }

    /// Starts `spec` (checked already), replacing a running job.
    pub fn start(&self, rt: &Arc<Runtime>, spec: Spec, next: usize) -> Result<(), String> {
        let mut checked = spec.check()?;
        // The cap is the site's, as a cluster rate limit is: each node
        // takes its share.
        let nodes = rt
            .config()
            .site
            .as_ref()
            .map_or(1, |s| s.other_peers().count() as u64 + 1);
        checked.bytes_per_second = checked.bytes_per_second.map(|b| (b / nodes).max(1));
        let path = Self::path(rt);
        let saved = Saved {
            spec: spec.clone(),
            next,
        };
        let id = {
            let mut current = self.current.lock();
            *current += 1;
            write_atomically(&path, &saved)?;
            *current
        };
        let progress = Arc::new(Progress::default());
        *progress.phase.lock() = "expanding";
        let task = tokio::spawn(run(
            id,
            Arc::downgrade(rt),
            checked,
            spec.clone(),
            next,
            path,
            progress.clone(),
        ));
        if let Some(old) = self.job.lock().replace(Job {
            spec,
            progress,
            task,
        }) {
            old.task.abort();
        }
        Ok(())
    }

    /// Stops the running job; whether there was one.
    pub fn cancel(&self, rt: &Runtime) -> bool {
        let Some(job) = self.job.lock().as_ref().map(|j| j.task.abort_handle()) else {
            return false;
        };
        job.abort();
        if let Some(j) = self.job.lock().as_ref() {
            *j.progress.phase.lock() = "cancelled";
        }
        let mut current = self.current.lock();
        *current += 1;
        let _ = std::fs::remove_file(Self::path(rt));
        true
    }

    /// A job a previous process left unfinished, started again where it was.
    pub fn resume(&self, rt: &Arc<Runtime>) {
        let path = Self::path(rt);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        match serde_json::from_str::<Saved>(&text) {
            Ok(saved) => {
                tracing::info!(path = %path.display(), next = saved.next, "resuming a prefill job");
                if let Err(e) = self.start(rt, saved.spec, saved.next) {
                    tracing::warn!(path = %path.display(), error = %e, "a saved prefill job cannot resume");
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a saved prefill job is unreadable; removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// `GET /cache/prefill`
    pub fn status(&self) -> Value {
        let job = self.job.lock();
        let Some(job) = job.as_ref() else {
            return json!({ "phase": "idle" });
        };
        let p = &job.progress;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let bytes = n(&p.bytes);
        let elapsed = p.started.lock().map(|s| s.elapsed().as_secs_f64());
        let rate = elapsed.filter(|e| *e > 0.0).map(|e| bytes as f64 * 8.0 / e);
        let (objects, done) = (n(&p.objects), n(&p.done));
        let eta = match (elapsed, done) {
            (Some(e), d) if d > 0 && objects > d => Some(e / d as f64 * (objects - d) as f64),
            _ => None,
        };
        json!({
            "phase": *p.phase.lock(),
            "spec": job.spec,
            "objects": objects,
            "done": done,
            "fetched": n(&p.fetched),
            "fresh": n(&p.fresh),
            "not_owned": n(&p.not_owned),
            "failed": n(&p.failed),
            "bytes": bytes,
            "rate_bits_per_second": rate,
            "eta_seconds": eta,
            "errors": p.errors.lock().iter().collect::<Vec<_>>(),
        })
    }
}

fn write_atomically(path: &std::path::Path, saved: &Saved) -> Result<(), String> {
    let text = serde_json::to_vec(saved).map_err(|e| format!("prefill state: {e}"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("prefill state {}: {e}", path.display()))
}

/// Saves (`Some`) or removes (`None`) job `id`'s state, if it is still
/// the current job.
fn save(
    rt: &Runtime,
    id: u64,
    path: &std::path::Path,
    saved: Option<&Saved>,
) -> Result<(), String> {
    let current = rt.prefill.current.lock();
    if *current != id {
        return Ok(());
    }
    match saved {
        Some(s) => write_atomically(path, s),
        None => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
    }
}

async fn run(
    id: u64,
    rt: Weak<Runtime>,
    spec: spec::Checked,
    saved_spec: Spec,
    mut next: usize,
    path: PathBuf,
    progress: Arc<Progress>,
) {
    let Some(target) = rt.upgrade().and_then(|rt| fetch::Target::of(&rt)) else {
        *progress.phase.lock() = "failed";
        progress.error("the node has no plain http listener to fill through".to_string());
        return;
    };
    let objects = fetch::expand(&target, &spec, &progress).await;
    progress
        .objects
        .store(objects.len() as u64, Ordering::Relaxed);
    progress
        .done
        .store(next.min(objects.len()) as u64, Ordering::Relaxed);
    let mut pacer = pace::Pacer::new(spec.bytes_per_second);
    let mut saved_at = Instant::now();
    while next < objects.len() {
        if let Some(w) = spec.window {
            let now = jiff::Zoned::now();
            let minute =
                u32::from(now.hour().unsigned_abs()) * 60 + u32::from(now.minute().unsigned_abs());
            let wait = w.wait(minute, u32::from(now.second().unsigned_abs()));
            if !wait.is_zero() {
                *progress.phase.lock() = "waiting for the window";
                // Checked again at least every minute (clock changes, DST).
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
        }
        *progress.phase.lock() = "filling";
        progress.started.lock().get_or_insert_with(Instant::now);
        let Some(rt) = rt.upgrade() else { return };
        let url = &objects[next];
        let outcome = fetch::object(&target, url, &mut pacer).await;
        let p = &rt.prefill;
        let result = match outcome {
            Outcome::Fetched(bytes) => {
                progress.fetched.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                p.bytes.inc_by(bytes);
                "fetched"
            }
            Outcome::Fresh => {
                progress.fresh.fetch_add(1, Ordering::Relaxed);
                "fresh"
            }
            Outcome::NotOwned => {
                progress.not_owned.fetch_add(1, Ordering::Relaxed);
                "not_owned"
            }
            Outcome::Failed(e) => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                progress.error(format!("{url}: {e}"));
                "failed"
            }
        };
        p.objects.with_label_values(&[result]).inc();
        next += 1;
        progress.done.fetch_add(1, Ordering::Relaxed);
        if saved_at.elapsed() >= Duration::from_secs(1) {
            saved_at = Instant::now();
            let saved = Saved {
                spec: saved_spec.clone(),
                next,
            };
            if let Err(e) = save(&rt, id, &path, Some(&saved)) {
                progress.error(e);
            }
        }
    }
    *progress.phase.lock() = "done";
    if let Some(rt) = rt.upgrade() {
        let _ = save(&rt, id, &path, None);
    }
}
