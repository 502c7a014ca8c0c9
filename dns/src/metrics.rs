//! Prometheus metrics of the DNS service. Counter handles are resolved per
//! generation (zones and sites change on reload), so a query does no label
//! lookups.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

use crate::health::SiteState;

/// Query types counted by name; the rest count as `other`.
pub const QTYPES: [&str; 12] = [
    "A", "AAAA", "CNAME", "NS", "SOA", "MX", "TXT", "SRV", "CAA", "ANY", "HINFO", "other",
];
/// Response codes counted by name; the rest count as `other`.
pub const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "SERVFAIL", "NOTIMP", "other",
];

pub fn qtype_index(t: RecordType) -> usize {
    match t {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::CNAME => 2,
        RecordType::NS => 3,
        RecordType::SOA => 4,
        RecordType::MX => 5,
        RecordType::TXT => 6,
        RecordType::SRV => 7,
        RecordType::CAA => 8,
        RecordType::ANY => 9,
        RecordType::HINFO => 10,
        _ => 11,
    }
}

pub fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::Refused => 2,
        ResponseCode::FormErr => 3,
        ResponseCode::ServFail => 4,
        ResponseCode::NotImp => 5,
        _ => 6,
    }
}

/// The metric families, registered once per node.
pub struct DnsMetrics {
    queries: IntCounterVec,
    answers: IntCounterVec,
    pub seconds: Histogram,
    locate: IntCounterVec,
    rrl: IntCounterVec,
    truncated: IntCounter,
    malformed: IntCounter,
    packet_cache: IntCounterVec,
}

/// Handles for one generation's zones and sites.
pub struct Handles {
    /// `[zone][qtype][rcode]`; the last zone row is "-" (no zone).
    queries: Vec<[[IntCounter; 7]; 12]>,
    /// By site index.
    pub answers: Vec<IntCounter>,
    pub located_ecs: IntCounter,
    pub located_address: IntCounter,
    pub unknown_ecs: IntCounter,
    pub unknown_address: IntCounter,
    pub rrl_dropped: IntCounter,
    pub rrl_slipped: IntCounter,
    pub rrl_would: IntCounter,
    pub truncated: IntCounter,
    pub malformed: IntCounter,
    pub packet_cache_hit: IntCounter,
    pub packet_cache_miss: IntCounter,
}

impl Handles {
    /// Counts a query of `zone` (None: no zone of ours).
    pub fn query(&self, zone: Option<usize>, qtype: usize, rcode: usize) {
        let row = zone.unwrap_or(self.queries.len().saturating_sub(1));
        if let Some(r) = self.queries.get(row) {
            r[qtype.min(11)][rcode.min(6)].inc();
        }
    }
}

impl DnsMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let queries = IntCounterVec::new(
            Opts::new(
                "edge_dns_queries_total",
                "DNS queries by zone, type and response code",
            ),
            &["zone", "qtype", "rcode"],
        )?;
        let answers = IntCounterVec::new(
            Opts::new("edge_dns_geo_answers_total", "Geo answers by site answered"),
            &["site"],
        )?;
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "edge_dns_query_duration_seconds",
                "Time from a query read to its answer ready to send",
            )
            .buckets(exponential_buckets(0.000_002, 2.0, 16)?),
        )?;
        let locate = IntCounterVec::new(
            Opts::new(
                "edge_dns_locate_total",
                "Geo queries by how the client was located (ecs or address) and whether it was found",
            ),
            &["source", "result"],
        )?;
        let rrl = IntCounterVec::new(
            Opts::new(
                "edge_dns_rrl_total",
                "Responses held back by response rate limiting: dropped, slipped (sent truncated), or would have been (log_only)",
            ),
            &["action"],
        )?;
        let truncated = IntCounter::new(
            "edge_dns_truncated_total",
            "UDP answers too large for the client's buffer, sent with TC",
        )?;
        let malformed = IntCounter::new(
            "edge_dns_malformed_total",
            "Packets that were not a DNS query edge could read (answered FORMERR or dropped)",
        )?;
        let packet_cache = IntCounterVec::new(
            Opts::new(
                "edge_dns_packet_cache_total",
                "Queries looked up in the packet cache: answered from it (hit) or made (miss)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(packet_cache.clone()))?;
        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(answers.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(locate.clone()))?;
        registry.register(Box::new(rrl.clone()))?;
        registry.register(Box::new(truncated.clone()))?;
        registry.register(Box::new(malformed.clone()))?;
        Ok(Self {
            queries,
            answers,
            seconds,
            locate,
            rrl,
            truncated,
            malformed,
            packet_cache,
        })
    }

    pub fn handles(&self, zones: &[&str], sites: &[&str]) -> Handles {
        let row = |zone: &str| -> [[IntCounter; 7]; 12] {
            QTYPES.map(|t| RCODES.map(|r| self.queries.with_label_values(&[zone, t, r])))
        };
        let mut queries: Vec<_> = zones.iter().map(|z| row(z)).collect();
        queries.push(row("-"));
        Handles {
            queries,
            answers: sites
                .iter()
                .map(|s| self.answers.with_label_values(&[s]))
                .collect(),
            located_ecs: self.locate.with_label_values(&["ecs", "found"]),
            located_address: self.locate.with_label_values(&["address", "found"]),
            unknown_ecs: self.locate.with_label_values(&["ecs", "unknown"]),
            unknown_address: self.locate.with_label_values(&["address", "unknown"]),
            rrl_dropped: self.rrl.with_label_values(&["drop"]),
            rrl_slipped: self.rrl.with_label_values(&["slip"]),
            rrl_would: self.rrl.with_label_values(&["log_only"]),
            truncated: self.truncated.clone(),
            malformed: self.malformed.clone(),
            packet_cache_hit: self.packet_cache.with_label_values(&["hit"]),
            packet_cache_miss: self.packet_cache.with_label_values(&["miss"]),
        }
    }
}

/// `edge_dns_site_up{site}` (1 answered, 0 not) and `edge_dns_site_drained`,
/// read at scrape time.
pub struct SiteCollector {
    sites: Arc<dyn Fn() -> Vec<(String, Arc<SiteState>)> + Send + Sync>,
    descs: Vec<Desc>,
}

fn site_gauges() -> Result<[IntGaugeVec; 3], prometheus::Error> {
    Ok([
        IntGaugeVec::new(
            Opts::new(
                "edge_dns_site_up",
                "1 while the site is answered (healthy and not drained)",
            ),
            &["site"],
        )?,
        IntGaugeVec::new(
            Opts::new(
                "edge_dns_site_healthy",
                "1 while any of the site's nodes passes its checks",
            ),
            &["site"],
        )?,
        IntGaugeVec::new(
            Opts::new(
                "edge_dns_site_drained",
                "1 while the admin API has the site drained",
            ),
            &["site"],
        )?,
    ])
}

fn shed_gauge() -> Result<prometheus::GaugeVec, prometheus::Error> {
    prometheus::GaugeVec::new(
        Opts::new(
            "edge_dns_site_shed_ratio",
            "Share of the site's located clients answered with the next nearest site (load above the high-water mark)",
        ),
        &["site"],
    )
}

fn headroom_gauge() -> Result<prometheus::GaugeVec, prometheus::Error> {
    prometheus::GaugeVec::new(
        Opts::new(
            "edge_dns_node_headroom",
            "1 - load ÷ capacity of a probed node, as its /site/state said (0 at or above capacity; absent without a capacity)",
        ),
        &["site", "node"],
    )
}

impl SiteCollector {
    pub fn new(
        sites: Arc<dyn Fn() -> Vec<(String, Arc<SiteState>)> + Send + Sync>,
    ) -> Result<Self, prometheus::Error> {
        let mut descs: Vec<Desc> = site_gauges()?
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        let utilization = prometheus::GaugeVec::new(
            Opts::new(
                "edge_dns_site_utilization",
                "Load ÷ capacity the site's nodes report in /site/state (mean of the up nodes)",
            ),
            &["site"],
        )?;
        descs.extend(utilization.desc().into_iter().cloned());
        descs.extend(shed_gauge()?.desc().into_iter().cloned());
        descs.extend(headroom_gauge()?.desc().into_iter().cloned());
        Ok(Self { sites, descs })
    }
}

impl Collector for SiteCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok([up, healthy, drained]) = site_gauges() else {
            return Vec::new();
        };
        let Ok(utilization) = prometheus::GaugeVec::new(
            Opts::new(
                "edge_dns_site_utilization",
                "Load ÷ capacity the site's nodes report in /site/state (mean of the up nodes)",
            ),
            &["site"],
        ) else {
            return Vec::new();
        };
        let (Ok(shed), Ok(headroom)) = (shed_gauge(), headroom_gauge()) else {
            return Vec::new();
        };
        for (name, s) in (self.sites)() {
            up.with_label_values(&[&name]).set(i64::from(s.up()));
            healthy
                .with_label_values(&[&name])
                .set(i64::from(s.healthy()));
            drained
                .with_label_values(&[&name])
                .set(i64::from(s.drained()));
            if let Some(u) = s.utilization() {
                utilization.with_label_values(&[&name]).set(u);
            }
            shed.with_label_values(&[&name])
                .set(f64::from(s.shed()) / 1000.0);
            for n in s.nodes().iter().filter(|n| n.up) {
                if let Some(u) = n.utilization {
                    headroom
                        .with_label_values(&[name.as_str(), n.url.as_str()])
                        .set((1.0 - u).max(0.0));
                }
            }
        }
        let mut families: Vec<MetricFamily> = [up, healthy, drained]
            .iter()
            .flat_map(|g| g.collect())
            .collect();
        families.extend(utilization.collect());
        families.extend(shed.collect());
        families.extend(headroom.collect());
        families
    }
}
