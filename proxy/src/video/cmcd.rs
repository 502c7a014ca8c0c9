//! Common Media Client Data (CTA-5004): what players say about their
//! playback with every request, in the `CMCD` query parameter or the
//! `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session`
//! headers. edge reads the keys that matter for delivery, logs them, counts
//! them per site, and keeps a per-client-prefix quality summary; it takes
//! the data out of the cache key and (unless `cmcd.forward`) out of the
//! request sent upstream. Malformed data is ignored, never an error.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use parking_lot::Mutex;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The query parameter (CTA-5004 §2).
pub const QUERY: &str = "CMCD";
/// The four headers (CTA-5004 §2), lower case.
pub static HEADERS: [http::HeaderName; 4] = [
    http::HeaderName::from_static("cmcd-request"),
    http::HeaderName::from_static("cmcd-object"),
    http::HeaderName::from_static("cmcd-status"),
    http::HeaderName::from_static("cmcd-session"),
];

/// The longest string value kept (the spec's limit for `cid` and `sid`).
const MAX_STRING: usize = 64;

/// The keys edge uses. Integers are in the spec's units: kbps for `br`,
/// `mtp`, `tb`, `rtp`; milliseconds for `bl`, `d`, `dl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmcd {
    /// Session id: one playback.
    pub sid: Option<String>,
    /// Content id: one title.
    pub cid: Option<String>,
    /// Object type: `m` manifest, `a` audio, `v` video, `av`, `i` init,
    /// `c` caption, `tt` timed text, `k` key, `o` other.
    pub ot: Option<String>,
    /// Streaming format (`d` DASH, `h` HLS, `s` Smooth, `o` other).
    pub sf: Option<String>,
    /// Stream type (`v` VOD, `l` live).
    pub st: Option<String>,
    /// Encoded bitrate of the object, kbps.
    pub br: Option<u64>,
    /// Buffer length, ms.
    pub bl: Option<u64>,
    /// Buffer starvation since the last request.
    pub bs: bool,
    /// Measured throughput, kbps.
    pub mtp: Option<u64>,
    /// Deadline: the object is needed within this many ms.
    pub dl: Option<u64>,
    /// Object duration, ms.
    pub d: Option<u64>,
    /// Top bitrate of the rendition set, kbps.
    pub tb: Option<u64>,
    /// Startup: the object is needed urgently to start playback.
    pub su: bool,
}

enum Value<'a> {
    /// A key alone: boolean true.
    True,
    Str(String),
    Token(&'a str),
}

/// Splits one CMCD list (`k=v,k2,k3="s"`) into pairs; `None` if it is not
/// well formed (then all of it is ignored).
fn pairs(text: &str) -> Option<Vec<(&str, Value<'_>)>> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    while i < b.len() {
        skip_ws(&mut i);
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'.' | b'_')) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let key = &text[start..i];
        let value = if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut s = String::new();
                loop {
                    match b.get(i)? {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let c = *b.get(i + 1)?;
                            if c != b'"' && c != b'\\' {
                                return None;
                            }
                            s.push(c as char);
                            i += 2;
                        }
                        c if c.is_ascii() && !c.is_ascii_control() => {
                            s.push(*c as char);
                            i += 1;
                        }
                        _ => return None,
                    }
                    if s.len() > 4 * MAX_STRING {
                        return None;
                    }
                }
                Value::Str(s)
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                let v = text[vs..i].trim_end();
                if v.is_empty() {
                    return None;
                }
                Value::Token(v)
            }
        } else {
            Value::True
        };
        out.push((key, value));
        skip_ws(&mut i);
        match b.get(i) {
            None => {}
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
    Some(out)
}

fn int(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Token(t)
            if !t.is_empty() && t.len() <= 12 && t.bytes().all(|c| c.is_ascii_digit()) =>
        {
            t.parse().ok()
        }
        _ => None,
    }
}

fn string(v: Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) if !s.is_empty() && s.len() <= MAX_STRING => Some(s),
        _ => None,
    }
}

fn token(v: &Value<'_>, allowed: &[&str]) -> Option<String> {
    match v {
        Value::Token(t) if allowed.contains(t) => Some(t.to_string()),
        _ => None,
    }
}

impl Cmcd {
    /// Whether no key was read.
    pub fn is_empty(&self) -> bool {
        *self == Cmcd::default()
    }

    /// Reads one list (a header's value, or the query parameter's decoded
    /// value). A malformed list is ignored whole; a key whose value has the
    /// wrong type is ignored alone; unknown and custom keys are skipped.
    pub fn read(&mut self, text: &str) {
        let Some(pairs) = pairs(text) else { return };
        for (key, v) in pairs {
            match key {
                "sid" => self.sid = string(v).or(self.sid.take()),
                "cid" => self.cid = string(v).or(self.cid.take()),
                "ot" => {
                    let t = token(&v, &["m", "a", "v", "av", "i", "c", "tt", "k", "o"]);
                    self.ot = t.or(self.ot.take());
                }
                "sf" => self.sf = token(&v, &["d", "h", "s", "o"]).or(self.sf.take()),
                "st" => self.st = token(&v, &["v", "l"]).or(self.st.take()),
                "br" => self.br = int(&v).or(self.br),
                "bl" => self.bl = int(&v).or(self.bl),
                "mtp" => self.mtp = int(&v).or(self.mtp),
                "dl" => self.dl = int(&v).or(self.dl),
                "d" => self.d = int(&v).or(self.d),
                "tb" => self.tb = int(&v).or(self.tb),
                "bs" => self.bs |= matches!(v, Value::True),
                "su" => self.su |= matches!(v, Value::True),
                _ => {}
            }
        }
    }

    /// What a request carries: the decoded query value (if any) and the
    /// four headers' values.
    pub fn of<'a>(query: Option<&str>, headers: impl Iterator<Item = &'a str>) -> Cmcd {
        let mut c = Cmcd::default();
        if let Some(q) = query {
            c.read(&crate::route::matcher::percent_decode(q));
        }
        for h in headers {
            c.read(h);
        }
        c
    }
}

/// Per-site counters (the label is `[site].name`, or `none`).
pub struct CmcdMetrics {
    pub requests: IntCounterVec,
    pub starvations: IntCounterVec,
    pub startups: IntCounterVec,
    pub bitrate: HistogramVec,
    pub throughput: HistogramVec,
    pub sessions: IntGaugeVec,
}

impl CmcdMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "edge_cmcd_requests_total",
                "Requests that carried CTA-5004 client data, by site",
            ),
            &["site"],
        )?;
        let starvations = IntCounterVec::new(
            Opts::new(
                "edge_cmcd_buffer_starvations_total",
                "Requests whose player reported buffer starvation (bs), by site",
            ),
            &["site"],
        )?;
        let startups = IntCounterVec::new(
            Opts::new(
                "edge_cmcd_startups_total",
                "Requests a player needed to start playback (su), by site",
            ),
            &["site"],
        )?;
        let kbps = vec![
            100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 64000.0,
        ];
        let bitrate = HistogramVec::new(
            HistogramOpts::new(
                "edge_cmcd_bitrate_kbps",
                "Encoded bitrate of the objects players asked for (br), kbps, by site",
            )
            .buckets(kbps.clone()),
            &["site"],
        )?;
        let throughput = HistogramVec::new(
            HistogramOpts::new(
                "edge_cmcd_measured_throughput_kbps",
                "Throughput players measured (mtp), kbps, by site",
            )
            .buckets(kbps),
            &["site"],
        )?;
        let sessions = IntGaugeVec::new(
            Opts::new(
                "edge_cmcd_sessions",
                "Playback sessions (distinct sid) seen in the last 5 minutes, by site",
            ),
            &["site"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(starvations.clone()))?;
        registry.register(Box::new(startups.clone()))?;
        registry.register(Box::new(bitrate.clone()))?;
        registry.register(Box::new(throughput.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        Ok(Self {
            requests,
            starvations,
            startups,
            bitrate,
            throughput,
            sessions,
        })
    }
}

/// How a client prefix's players fare.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Qoe {
    pub requests: u64,
    pub starvations: u64,
    /// Exponentially weighted mean of `mtp` (kbps; weight 1/8 per report).
    pub throughput_kbps: Option<f64>,
    /// Same for `br`.
    pub bitrate_kbps: Option<f64>,
    #[serde(skip)]
    last: Option<Instant>,
}

impl Qoe {
    /// Starvations per 1,000 requests.
    pub fn starvation_per_mille(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.starvations as f64 * 1000.0 / self.requests as f64
        }
    }
}

/// One prefix's summary, as `/cmcd` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrefixQoe {
    pub prefix: String,
    #[serde(flatten)]
    pub qoe: Qoe,
    pub starvation_per_mille: f64,
    pub idle_seconds: u64,
}

/// The per-client-prefix summary (/24 for IPv4, /48 for IPv6), bounded:
/// the least recently used prefixes go first, and a prefix silent for 30
/// minutes is forgotten. Sessions are counted the same way (5 minutes).
pub struct QoeTable {
    prefixes: moka::sync::Cache<IpNet, Arc<Mutex<Qoe>>>,
    sessions: moka::sync::Cache<(Arc<str>, String), ()>,
}

impl Default for QoeTable {
    fn default() -> Self {
        Self::new(65_536, 1_000_000)
    }
}

/// The prefix a client's quality is kept under.
pub fn prefix_of(ip: IpAddr) -> IpNet {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let len = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, len).map_or(IpNet::from(ip), |n| n.trunc())
}

impl QoeTable {
    pub fn new(prefixes: u64, sessions: u64) -> Self {
        Self {
            prefixes: moka::sync::Cache::builder()
                .max_capacity(prefixes)
                .time_to_idle(Duration::from_secs(30 * 60))
                .build(),
            sessions: moka::sync::Cache::builder()
                .max_capacity(sessions)
                .time_to_idle(Duration::from_secs(5 * 60))
                .build(),
        }
    }

    /// Counts one request's data.
    pub fn record(&self, metrics: &CmcdMetrics, site: &Arc<str>, client: Option<IpAddr>, c: &Cmcd) {
        let label = [&**site];
        metrics.requests.with_label_values(&label).inc();
        if c.bs {
            metrics.starvations.with_label_values(&label).inc();
        }
        if c.su {
            metrics.startups.with_label_values(&label).inc();
        }
        if let Some(br) = c.br {
            metrics.bitrate.with_label_values(&label).observe(br as f64);
        }
        if let Some(mtp) = c.mtp {
            metrics
                .throughput
                .with_label_values(&label)
                .observe(mtp as f64);
        }
        if let Some(sid) = &c.sid {
            self.sessions.insert((site.clone(), sid.clone()), ());
        }
        let Some(ip) = client else { return };
        let entry = self
            .prefixes
            .get_with(prefix_of(ip), || Arc::new(Mutex::new(Qoe::default())));
        let mut q = entry.lock();
        q.requests += 1;
        q.starvations += u64::from(c.bs);
        let ewma = |old: Option<f64>, new: Option<u64>| match (old, new) {
            (Some(o), Some(n)) => Some(o + (n as f64 - o) / 8.0),
            (None, Some(n)) => Some(n as f64),
            (o, None) => o,
        };
        q.throughput_kbps = ewma(q.throughput_kbps, c.mtp);
        q.bitrate_kbps = ewma(q.bitrate_kbps, c.br);
        q.last = Some(Instant::now());
    }

    /// Sets the sessions gauge (at scrape time or when read).
    pub fn count_sessions(&self, metrics: &CmcdMetrics) {
        self.sessions.run_pending_tasks();
        let mut by_site: std::collections::HashMap<Arc<str>, i64> = Default::default();
        for (k, _) in self.sessions.iter() {
            *by_site.entry(k.0.clone()).or_default() += 1;
        }
        metrics.sessions.reset();
        for (site, n) in by_site {
            metrics.sessions.with_label_values(&[&*site]).set(n);
        }
    }

    /// The `limit` prefixes with the most requests, most first.
    pub fn top(&self, limit: usize) -> Vec<PrefixQoe> {
        let now = Instant::now();
        let mut all: Vec<PrefixQoe> = self
            .prefixes
            .iter()
            .map(|(net, q)| {
                let q = q.lock().clone();
                PrefixQoe {
                    prefix: net.to_string(),
                    starvation_per_mille: q.starvation_per_mille(),
                    idle_seconds: q.last.map_or(0, |l| now.duration_since(l).as_secs()),
                    qoe: q,
                }
            })
            .collect();
        all.sort_by(|a, b| {
            b.qoe
                .requests
                .cmp(&a.qoe.requests)
                .then(a.prefix.cmp(&b.prefix))
        });
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Cmcd {
        let mut c = Cmcd::default();
        c.read(s);
        c
    }

    #[test]
    fn the_spec_example_is_read() {
        // CTA-5004 §3 style: query value once decoded.
        let c = parsed(
            r#"bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,mtp=48100,nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",ot=v,rtp=12000,sf=d,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,tb=6000"#,
        );
        assert_eq!(c.bl, Some(21300));
        assert_eq!(c.br, Some(3200));
        assert!(c.bs && c.su);
        assert_eq!(
            c.cid.as_deref(),
            Some("faec5fc2-ac30-11ea-bb37-0242ac130002")
        );
        assert_eq!(
            c.sid.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(
            (c.d, c.dl, c.mtp, c.tb),
            (Some(4004), Some(18500), Some(48100), Some(6000))
        );
        assert_eq!(c.ot.as_deref(), Some("v"));
        assert_eq!((c.sf.as_deref(), c.st.as_deref()), (Some("d"), Some("v")));
    }

    #[test]
    fn headers_and_query_add_up_and_the_query_is_decoded() {
        let c = Cmcd::of(
            Some("br%3D800%2Cot%3Dv"),
            [r#"bl=1200,mtp=5000"#, r#"sid="s-1""#, "bs"].into_iter(),
        );
        assert_eq!((c.br, c.bl, c.mtp), (Some(800), Some(1200), Some(5000)));
        assert_eq!(c.sid.as_deref(), Some("s-1"));
        assert!(c.bs);
        assert_eq!(c.ot.as_deref(), Some("v"));
    }

    #[test]
    fn quoted_strings_may_hold_commas_and_escapes() {
        let c = parsed(r#"cid="a,b\"c\\d",br=5"#);
        assert_eq!(c.cid.as_deref(), Some(r#"a,b"c\d"#));
        assert_eq!(c.br, Some(5));
    }

    #[test]
    fn malformed_lists_are_ignored_whole_and_bad_values_alone() {
        for junk in [
            "br=",
            "=5",
            ",,,",
            "br=5,,bl=3",
            "cid=\"unterminated",
            "cid=\"bad\\x\"",
            "br=5 bl=3",
            "sid=\"\u{7}\"",
            "\u{0}",
            "br=5,é=1",
        ] {
            assert!(parsed(junk).is_empty(), "{junk:?}");
        }
        // Wrong types: that key only.
        let c =
            parsed(r#"br=fast,bl=-1,mtp=1e3,ot=video,sid=bare,cid="",tb=99999999999999,bs=1,d=40"#);
        assert_eq!(c.d, Some(40));
        assert!(c.br.is_none() && c.bl.is_none() && c.mtp.is_none() && c.tb.is_none());
        assert!(c.ot.is_none() && c.sid.is_none() && c.cid.is_none());
        assert!(!c.bs);
        // A string over 64 bytes is not kept; a very long one is malformed.
        let long = format!("sid=\"{}\",br=1", "x".repeat(65));
        assert_eq!(parsed(&long).sid, None);
        assert_eq!(parsed(&long).br, Some(1));
        let huge = format!("sid=\"{}\"", "x".repeat(10_000));
        assert!(parsed(&huge).is_empty());
        // Custom keys (with a hyphen) are skipped.
        assert_eq!(parsed("com.example-myNumericKey=500,br=2").br, Some(2));
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        assert_eq!(
            prefix_of("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            prefix_of("::ffff:192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            prefix_of("2001:db8:1:2::9".parse().unwrap()).to_string(),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn the_table_sums_a_prefix_and_counts_sessions() {
        let reg = Registry::new();
        let m = CmcdMetrics::new(&reg).unwrap();
        let t = QoeTable::new(100, 100);
        let site: Arc<str> = Arc::from("ams");
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        t.record(&m, &site, Some(a), &parsed(r#"bs,mtp=1000,sid="x""#));
        t.record(&m, &site, Some(b), &parsed(r#"mtp=9000,sid="y""#));
        t.record(&m, &site, Some(b), &parsed(r#"sid="y""#));
        let top = t.top(10);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].prefix, "198.51.100.0/24");
        assert_eq!((top[0].qoe.requests, top[0].qoe.starvations), (3, 1));
        assert_eq!(top[0].qoe.throughput_kbps, Some(2000.0));
        assert!((top[0].starvation_per_mille - 333.33).abs() < 0.01);
        t.count_sessions(&m);
        assert_eq!(m.sessions.with_label_values(&["ams"]).get(), 2);
        assert_eq!(m.requests.with_label_values(&["ams"]).get(), 3);
        assert_eq!(m.starvations.with_label_values(&["ams"]).get(), 1);
    }
}
