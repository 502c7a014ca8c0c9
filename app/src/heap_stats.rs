//! Heap allocations counted, for the allocations-per-request benchmark
//! (`loadbench allocs`): built with `--features alloc-stats`, edge runs on
//! glibc's allocator wrapped by `stats_alloc` (mimalloc has no counting
//! wrapper usable in a `static`) and `/metrics` carries
//! `edge_heap_allocations_total`, `edge_heap_allocated_bytes_total` and
//! `edge_heap_live_bytes` (allocated and not yet freed: what a cached
//! object really holds, against what `ram_size` accounts).
//! Counts are what the program asks for, whichever allocator serves them;
//! CPU figures of such a build are not comparable and are not reported.
//! Without the feature, nothing is counted and nothing is shown.

#[cfg(feature = "alloc-stats")]
#[global_allocator]
static GLOBAL: stats_alloc::StatsAlloc<std::alloc::System> = stats_alloc::StatsAlloc::system();

/// The counters, when counting.
pub struct HeapMetrics {
    #[cfg(feature = "alloc-stats")]
    allocations: prometheus::IntCounter,
    #[cfg(feature = "alloc-stats")]
    bytes: prometheus::IntCounter,
    #[cfg(feature = "alloc-stats")]
    live: prometheus::IntGauge,
}

impl HeapMetrics {
    #[cfg(feature = "alloc-stats")]
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let allocations = prometheus::IntCounter::new(
            "edge_heap_allocations_total",
            "Heap allocations (and reallocations) since start (alloc-stats builds only)",
        )?;
        let bytes = prometheus::IntCounter::new(
            "edge_heap_allocated_bytes_total",
            "Bytes allocated on the heap since start (alloc-stats builds only)",
        )?;
        let live = prometheus::IntGauge::new(
            "edge_heap_live_bytes",
            "Bytes on the heap now, as asked for (alloc-stats builds only)",
        )?;
        registry.register(Box::new(allocations.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(live.clone()))?;
        Ok(Self {
            allocations,
            bytes,
            live,
        })
    }

    #[cfg(not(feature = "alloc-stats"))]
    pub fn new(_registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {})
    }

    /// Brings the counters up to the allocator's (before a scrape).
    pub fn update(&self) {
        #[cfg(feature = "alloc-stats")]
        {
            let s = GLOBAL.stats();
            let count = (s.allocations + s.reallocations) as u64;
            self.allocations
                .inc_by(count.saturating_sub(self.allocations.get()));
            self.bytes
                .inc_by((s.bytes_allocated as u64).saturating_sub(self.bytes.get()));
            let live = s.bytes_allocated as i64 - s.bytes_deallocated as i64;
            self.live.set(live);
        }
    }
}
