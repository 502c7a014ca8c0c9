//! The load balancer end to end: algorithms, health, ejection, breakers,
//! retries and the admin API, with real origins behind the `edge` binary.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use edge_testkit::{
    eventually, origin, origin_with, Client, EdgeNode, Faults, OriginConfig, RawConn, RunningOrigin,
};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "lb-test-token-0123456789";

/// A node with one pool over `origins` (weights given) and one route to it.
fn node_config(origins: &[(&RunningOrigin, u32)], pool_extra: &str) -> String {
    let backends: Vec<String> = origins
        .iter()
        .map(|(o, w)| format!("{{ address = \"{}\", weight = {w} }}", o.addr()))
        .collect();
    format!(
        r#"
[server]
threads = 2
access_log = false

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "all"
pool = "p"

[[pool]]
name = "p"
backends = [{}]
{pool_extra}
"#,
        backends.join(", ")
    )
}

/// Sends `n` GETs with `concurrency` clients; counts answers by origin name
/// (status != 200 counts under "status N").
async fn spread(
    url: &str,
    n: usize,
    concurrency: usize,
    client: impl Fn(usize) -> Client,
) -> BTreeMap<String, usize> {
    let per = n / concurrency;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let c = client(i);
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..per {
                let key = match c.request(Method::GET, &url, &[], "").await {
                    Ok(r) if r.status == 200 => {
                        r.header("x-origin-name").unwrap_or("?").to_string()
                    }
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => format!("error {e}"),
                };
                *counts.entry(key).or_default() += 1;
            }
            counts
        }));
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

fn share(counts: &BTreeMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_one_to_three_split_a_quarter_and_three_quarters() {
    let (a, b) = (origin("a").await, origin("b").await);
    for algorithm in ["weighted_round_robin", "random"] {
        let node = EdgeNode::start(
            BIN,
            &node_config(&[(&a, 1), (&b, 3)], &format!("algorithm = \"{algorithm}\"")),
        );
        let counts = spread(&node.url("web", "/obj/w?size=16"), 4000, 8, |_| {
            Client::new()
        })
        .await;
        let s = share(&counts, "a");
        assert!(
            (0.22..0.28).contains(&s),
            "{algorithm}: a got {s:.3} of {counts:?}"
        );
        assert_eq!(
            counts.values().sum::<usize>(),
            counts.get("a").unwrap() + counts.get("b").unwrap(),
            "{counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_requests_prefers_the_idle_backend() {
    let (slow, fast) = (origin("slow").await, origin("fast").await);
    slow.set_faults(Faults::parse("latency=200ms").unwrap());
    let node = EdgeNode::start(
        BIN,
        &node_config(&[(&slow, 1), (&fast, 1)], "algorithm = \"least_requests\""),
    );
    let counts = spread(&node.url("web", "/obj/l?size=16"), 240, 8, |_| {
        Client::new()
    })
    .await;
    assert!(share(&counts, "fast") > 0.8, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn p2c_ewma_moves_traffic_away_from_a_slow_backend() {
    let (slow, fast) = (origin("slow").await, origin("fast").await);
    slow.set_faults(Faults::parse("latency=100ms").unwrap());
    let node = EdgeNode::start(
        BIN,
        &node_config(&[(&slow, 1), (&fast, 1)], "algorithm = \"p2c_ewma\""),
    );
    let counts = spread(&node.url("web", "/obj/p?size=16"), 200, 1, |_| {
        Client::new()
    })
    .await;
    assert!(share(&counts, "slow") < 0.15, "{counts:?}");
    // Once the backend is fast again, traffic comes back as its average decays.
    slow.set_faults(Faults::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn source_ip_hash_keeps_each_client_on_one_backend() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let node = EdgeNode::start(
        BIN,
        &node_config(
            &[(&a, 1), (&b, 1), (&c, 1)],
            "algorithm = \"source_ip_hash\"",
        ),
    );
    let url = node.url("web", "/obj/s?size=16");
    let mut chosen = Vec::new();
    for last in 2..=13u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let counts = spread(&url, 20, 1, |_| Client::bound_to(ip)).await;
        assert_eq!(
            counts.len(),
            1,
            "client {ip} moved between backends: {counts:?}"
        );
        chosen.push(counts.keys().next().unwrap().clone());
    }
    chosen.sort();
    chosen.dedup();
    assert!(chosen.len() >= 2, "twelve clients all hashed to {chosen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_stickiness_keeps_a_client_and_moves_it_when_its_backend_goes() {
    let (a, b) = (origin("a").await, origin("b").await);
    let node = EdgeNode::start(
        BIN,
        &node_config(
            &[(&a, 1), (&b, 1)],
            "algorithm = \"cookie\"\nsticky_cookie = { name = \"EDGE_S\", ttl = \"1h\" }",
        ),
    );
    let url = node.url("web", "/obj/c?size=16");
    let c = Client::new();
    let first = c.get(&url).await;
    let set = first.header("set-cookie").unwrap().to_string();
    assert!(
        set.starts_with("EDGE_S=") && set.contains("Max-Age=3600") && set.contains("HttpOnly"),
        "{set}"
    );
    assert!(
        !set.contains(&a.addr().to_string()),
        "the cookie does not reveal backend addresses"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let home = first.header("x-origin-name").unwrap().to_string();
    for _ in 0..30 {
        let r = c.get_with(&url, &[("cookie", &cookie)]).await;
        assert_eq!(r.header("x-origin-name"), Some(home.as_str()));
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie while the backend serves"
        );
    }
    // Its backend disabled: the client lands elsewhere and is told so.
    let home_addr = if home == "a" { a.addr() } else { b.addr() };
    let disable = c
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{home_addr}/disable")),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(disable.status, 200, "{}", disable.text());
    let moved = c.get_with(&url, &[("cookie", &cookie)]).await;
    assert_ne!(moved.header("x-origin-name"), Some(home.as_str()));
    assert!(moved.header("set-cookie").is_some());
}

/// An origin that can be stopped and started again on the same address.
struct Restartable {
    name: String,
    addr: SocketAddr,
    running: Option<RunningOrigin>,
}

impl Restartable {
    async fn start(name: &str) -> Self {
        let o = origin(name).await;
        Self {
            name: name.into(),
            addr: o.addr(),
            running: Some(o),
        }
    }

    async fn kill(&mut self) {
        if let Some(o) = self.running.take() {
            o.shutdown().await;
        }
    }

    async fn revive(&mut self) {
        let o = edge_origin::Origin::new(OriginConfig {
            name: self.name.clone(),
            ..OriginConfig::default()
        })
        .spawn(self.addr)
        .await
        .unwrap();
        self.running = Some(o);
    }

    fn get(&self) -> &RunningOrigin {
        self.running.as_ref().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backend_is_retried_around_ejected_and_returns_when_it_recovers() {
    let (a, c) = (origin("a").await, origin("c").await);
    let mut b = Restartable::start("b").await;
    let extra = r#"
[pool.retry]
attempts = 2
on = ["connect_failure", "reset", "timeout"]
[pool.health_check]
kind = "http"
path = "/_origin/health"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
[pool.outlier_detection]
consecutive_gateway_errors = 2
base_ejection_time = "1s"
max_ejection_percent = 50
"#;
    let node = EdgeNode::start(BIN, &node_config(&[(&a, 1), (b.get(), 1), (&c, 1)], extra));
    let url = node.url("web", "/obj/k?size=1000");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, failures, ok, url) = (stop.clone(), failures.clone(), ok.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.request(Method::GET, &url, &[], "").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill().await;
    let client = Client::new();
    eventually(Duration::from_secs(10), "b marked unusable", || async {
        let pools = client.get(&node.admin_url("/pools")).await.json();
        let backend = pools[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["address"] == b.addr.to_string())
            .cloned()
            .unwrap();
        (backend["usable"] == false).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.revive().await;
    eventually(Duration::from_secs(15), "b serving again", || async {
        (b.get().stats().requests > 0).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    // Only requests in flight to b when it died may fail; GETs are retried
    // on the others, so in practice none do.
    assert!(
        failures.len() <= 4,
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_backend_hits_the_timeout() {
    let a = origin("a").await;
    a.set_faults(Faults::parse("latency=5s").unwrap());
    let node = EdgeNode::start(
        BIN,
        &node_config(
            &[(&a, 1)],
            "[pool.timeouts]\nfirst_byte = \"300ms\"\nidle = \"300ms\"\n[pool.retry]\nattempts = 0",
        ),
    );
    let r = Client::new().get(&node.url("web", "/obj/h")).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("did not answer in time"));
}

/// The waits for a backend made on one client connection are each bounded
/// by their own timeout, however many came before on it (a pass-through
/// re-arms one timer per connection for them: vendored pingora-core,
/// `wait_timer.rs`): answers, then a head that does not come (504 at
/// `first_byte`), answers again, a body whose pieces come further apart
/// than `idle` but all within `first_byte` of the head (cut: the body's
/// wait must not keep the head's later deadline), two rounds.
#[tokio::test(flavor = "multi_thread")]
async fn each_wait_for_a_backend_on_one_connection_is_bounded_by_its_own_timeout() {
    let a = origin("a").await;
    let node = EdgeNode::start(
        BIN,
        &node_config(
            &[(&a, 1)],
            "[pool.timeouts]\nfirst_byte = \"4s\"\nidle = \"200ms\"\n[pool.retry]\nattempts = 0",
        ),
    );
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut c = RawConn::connect(node.addr("web")).await;
    for round in 0..2 {
        for i in 0..3 {
            c.send(get(&format!("/obj/r{round}-{i}?size=2000")).as_bytes())
                .await;
            let r = c.response(false).await.unwrap();
            assert_eq!(r.status, 200, "round {round}, request {i}");
            assert_eq!(r.body.len(), 2000);
        }
        // The head does not come in time.
        a.set_faults(Faults::parse("latency=20s").unwrap());
        c.send(get(&format!("/obj/slow{round}")).as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 504, "round {round}: {}", r.text());
        assert!(r.text().contains("did not answer in time"), "{}", r.text());
        a.set_faults(Faults::default());
        if r.closes() {
            c = RawConn::connect(node.addr("web")).await;
        }
        c.send(get(&format!("/obj/after{round}")).as_bytes()).await;
        assert_eq!(
            c.response(false).await.unwrap().status,
            200,
            "round {round}"
        );
        // Three pieces a second apart: the whole body within 2 s of the
        // head (first_byte 4 s), each gap past idle (200 ms).
        a.set_faults(Faults::parse("drip=300/1s").unwrap());
        c.send(get(&format!("/obj/drip{round}?size=900")).as_bytes())
            .await;
        let cut = c.response(false).await;
        assert!(
            cut.is_err(),
            "round {round}: a body that stopped came whole"
        );
        a.set_faults(Faults::default());
        c = RawConn::connect(node.addr("web")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_backend_is_down_edge_answers_503_at_once() {
    // Two addresses nothing listens on.
    let dead: Vec<SocketAddr> = (0..2).map(|_| edge_testkit::refused_addr()).collect();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
         [[route]]\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\
         [pool.health_check]\nkind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 1\n",
        dead[0], dead[1]
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    let url = node.url("web", "/x");
    let r = eventually(Duration::from_secs(5), "both marked down", || async {
        let r = c.get(&url).await;
        r.text().contains("no backend is up").then_some(r)
    })
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("edge_pool_rejections_total{pool=\"p\",reason=\"no_backend\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_backend_healthy{backend="),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_half_opens_and_closes() {
    let a = origin("a").await;
    a.set_faults(Faults::parse("error=503").unwrap());
    let extra = "[pool.retry]\nattempts = 0\n[pool.circuit_breaker]\nconsecutive_failures = 3\nopen_for = \"1s\"\nhalf_open_probes = 2\n";
    let node = EdgeNode::start(BIN, &node_config(&[(&a, 1)], extra));
    let url = node.url("web", "/obj/b");
    let c = Client::new();
    for _ in 0..3 {
        let r = c.get(&url).await;
        assert_eq!(r.status, 503);
        assert!(
            r.text().contains("injected fault"),
            "the backend's own answer passes through"
        );
    }
    let before = a.stats().requests;
    let open = c.get(&url).await;
    assert_eq!(open.status, 503);
    assert!(
        open.text().contains("circuit breaker is open"),
        "{}",
        open.text()
    );
    assert!(open.header("retry-after").is_some());
    assert_eq!(
        a.stats().requests,
        before,
        "an open breaker does not reach the backend"
    );

    a.set_faults(Faults::default());
    eventually(
        Duration::from_secs(5),
        "the breaker to let probes through",
        || async { (c.get(&url).await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(c.get(&url).await.status, 200);
    let pools = c.get(&node.admin_url("/pools")).await.json();
    assert_eq!(pools[0]["backends"][0]["breaker"], "closed", "{pools}");
    // The metric names the state, one series per state.
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    for (state, value) in [("closed", 1), ("half_open", 0), ("open", 0)] {
        let line = format!(
            "edge_backend_breaker_state{{backend=\"{}\",pool=\"p\",state=\"{state}\"}} {value}",
            a.addr()
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_budget_keeps_retries_from_doubling_load_in_an_outage() {
    let (a, b) = (origin("a").await, origin("b").await);
    for o in [&a, &b] {
        o.set_faults(Faults::parse("error=503").unwrap());
    }
    let extra = "[pool.retry]\nattempts = 3\non = [\"gateway_error\"]\nbackoff = \"1ms\"\nmax_backoff = \"2ms\"\nbudget_percent = 20\nmin_concurrent_retries = 1\n[pool.outlier_detection]\nmax_ejection_percent = 0\n";
    // No ejection: with one of two backends ejected a retry has nowhere
    // else to go, and this test is about the budget, not outlier detection.
    let node = EdgeNode::start(BIN, &node_config(&[(&a, 1), (&b, 1)], extra));
    let counts = spread(&node.url("web", "/obj/r"), 300, 10, |_| Client::new()).await;
    assert_eq!(counts.get("status 503"), Some(&300), "{counts:?}");
    let origin_requests = a.stats().requests + b.stats().requests;
    // Without a budget: up to 4 tries each (1,200). With it: well under 1.5×.
    assert!(
        origin_requests < 450,
        "{origin_requests} origin requests for 300 client requests"
    );
    assert!(origin_requests > 300, "some retries still happen");
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    let exhausted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edge_retry_budget_exhausted_total{pool=\"p\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(exhausted > 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_feedback_shifts_weight_away_from_a_busy_backend() {
    let (busy, idle) = (origin("busy").await, origin("idle").await);
    busy.set_load(Some(90));
    let extra = "algorithm = \"weighted_round_robin\"\nload_feedback = { header = \"x-backend-load\", min_weight_percent = 10 }";
    let node = EdgeNode::start(BIN, &node_config(&[(&busy, 10), (&idle, 10)], extra));
    let url = node.url("web", "/obj/f?size=16");
    // The first answers carry the load figure; then the split follows it.
    spread(&url, 20, 1, |_| Client::new()).await;
    let counts = spread(&url, 400, 4, |_| Client::new()).await;
    // Weight 10 × 10% = 1 against 10: about 9%.
    assert!(share(&counts, "busy") < 0.15, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_lets_in_flight_finish_and_sends_nothing_new() {
    let (a, b) = (origin("a").await, origin("b").await);
    let node = EdgeNode::start(
        BIN,
        &node_config(&[(&a, 1), (&b, 1)], "algorithm = \"round_robin\""),
    );
    let c = Client::new();
    // A slow request on a (round robin starts at the first backend).
    let slow_url = node.url("web", "/obj/slow?size=20480&fault=drip%3D2048/100ms");
    let slow = tokio::spawn({
        let url = slow_url.clone();
        async move { Client::new().get(&url).await }
    });
    eventually(Duration::from_secs(5), "the slow request at a", || async {
        (a.stats().in_flight > 0).then_some(())
    })
    .await;
    let auth = format!("Bearer {TOKEN}");
    let drain = c
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{}/drain", a.addr())),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(drain.status, 200, "{}", drain.text());
    let before = a.stats().requests;
    let counts = spread(&node.url("web", "/obj/d?size=16"), 50, 2, |_| Client::new()).await;
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");
    assert_eq!(
        a.stats().requests,
        before,
        "nothing new reached the drained backend"
    );
    let done = slow.await.unwrap();
    assert_eq!(done.status, 200);
    assert_eq!(done.body.len(), 20480, "the in-flight request finished");

    let config = c
        .get_with(
            &node.admin_url("/config"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
        .json();
    assert_eq!(
        config["admin_overrides"][0]["admin"], "draining",
        "{config}"
    );
    let pools = c.get(&node.admin_url("/pools")).await.json();
    assert_eq!(pools[0]["backends"][0]["admin"], "draining");
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    for (state, value) in [("enabled", 0), ("draining", 1), ("disabled", 0)] {
        let line = format!(
            "edge_backend_admin_state{{backend=\"{}\",pool=\"p\",state=\"{state}\"}} {value}",
            a.addr()
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // Weights are overrides too; a bad one is refused.
    let w = c
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{}/weight", b.addr())),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "{\"weight\": 7}",
        )
        .await
        .unwrap();
    assert_eq!(w.status, 200, "{}", w.text());
    let bad = c
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{}/weight", b.addr())),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "{\"weight\": \"heavy\"}",
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let unknown = c
        .request(
            Method::POST,
            &node.admin_url("/pools/p/backends/10.9.9.9:1/drain"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let no_token = c
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{}/enable", a.addr())),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(no_token.status, 401);

    // A reload clears what the admin API set.
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(
        Duration::from_secs(5),
        "overrides cleared by reload",
        || async {
            let config = c
                .get_with(
                    &node.admin_url("/config"),
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                )
                .await
                .json();
            (config["admin_overrides"].as_array().unwrap().is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_sends_a_uri_to_one_backend() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let node = EdgeNode::start(
        BIN,
        &node_config(
            &[(&a, 1), (&b, 1), (&c, 1)],
            "algorithm = \"consistent_hash\"\nhash_key = \"uri\"",
        ),
    );
    let client = Client::new();
    let mut owners = std::collections::BTreeSet::new();
    for k in 0..20 {
        let url = node.url("web", &format!("/obj/seg{k}.ts?size=16"));
        let first = client
            .get(&url)
            .await
            .header("x-origin-name")
            .unwrap()
            .to_string();
        for _ in 0..5 {
            assert_eq!(
                client.get(&url).await.header("x-origin-name"),
                Some(first.as_str())
            );
        }
        owners.insert(first);
    }
    assert!(owners.len() >= 2, "{owners:?}");
    let _ = origin_with;
}

/// HAProxy's `add server` / `del server`: a backend added through the admin
/// API takes traffic at once; one removed (only from maintenance, with
/// nothing in flight, never the last) takes none; both show in /config
/// until the file is applied again.
#[tokio::test(flavor = "multi_thread")]
async fn backends_are_added_and_removed_at_runtime_until_the_next_reload() {
    let a = origin("a").await;
    let b = origin("b").await;
    let node = EdgeNode::start(BIN, &node_config(&[(&a, 1)], ""));
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let auth = format!("Bearer {TOKEN}");
    let call = |method: Method, path: String, body: String, token: bool| {
        let c = &c;
        let url = node.admin_url(&path);
        let auth = auth.clone();
        async move {
            let headers: Vec<(&str, &str)> = if token {
                vec![
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ]
            } else {
                vec![("content-type", "application/json")]
            };
            let r = c.request(method, &url, &headers, body).await.unwrap();
            (r.status, r.text())
        }
    };
    let add =
        |body: String, token: bool| call(Method::POST, "/pools/p/backends".into(), body, token);
    let b_addr = b.addr().to_string();

    // Refused, each with its reason, and nothing changes.
    let cases = [
        (format!(r#"{{"address": "{b_addr}"}}"#), false, 401),
        (String::new(), true, 400),
        (r#"{"address": "nope"}"#.to_string(), true, 400),
        (r#"{"address": "10.0.0.1:0"}"#.to_string(), true, 400),
        (
            format!(r#"{{"address": "{b_addr}", "weight": 0}}"#),
            true,
            400,
        ),
        (
            format!(r#"{{"address": "{b_addr}", "extra": 1}}"#),
            true,
            400,
        ),
        (format!(r#"{{"address": "{}"}}"#, a.addr()), true, 409),
    ];
    for (body, token, want) in cases {
        let (status, text) = add(body.clone(), token).await;
        assert_eq!(status, want, "{body}: {text}");
    }
    let (status, _) = call(
        Method::POST,
        "/pools/nope/backends".into(),
        format!(r#"{{"address": "{b_addr}"}}"#),
        true,
    )
    .await;
    assert_eq!(status, 404);
    let pools = c.get(&node.admin_url("/pools")).await.json();
    assert_eq!(pools[0]["backends"].as_array().unwrap().len(), 1, "{pools}");

    // Added: it takes its share at once, and other backends' overrides
    // stay (an edit is not a reload).
    let a_addr = a.addr().to_string();
    let (status, _) = call(
        Method::POST,
        format!("/pools/p/backends/{a_addr}/weight"),
        r#"{"weight": 5}"#.into(),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = add(format!(r#"{{"address": "{b_addr}", "weight": 3}}"#), true).await;
    assert_eq!(status, 201, "{text}");
    let pools = c.get(&node.admin_url("/pools")).await.json();
    let backends = pools[0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{pools}");
    assert_eq!(backends[1]["weight"], 3);
    assert_eq!(backends[0]["weight_override"], 5, "{pools}");
    let url = node.url("web", "/obj/x");
    for _ in 0..20 {
        assert_eq!(c.get(&url).await.status, 200);
    }
    let to_b = b.stats().requests;
    assert!(to_b > 0, "the added backend took no requests");
    let config = c
        .request(
            Method::GET,
            &node.admin_url("/config"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap()
        .json();
    let overrides = config["admin_overrides"].as_array().unwrap();
    assert!(
        overrides
            .iter()
            .any(|o| o["change"] == "added" && o["backend"] == b_addr.as_str() && o["weight"] == 3),
        "{config}"
    );

    // Removed: only from maintenance, never the last backend.
    let remove = |which: String| {
        call(
            Method::DELETE,
            format!("/pools/p/backends/{which}"),
            String::new(),
            true,
        )
    };
    let (status, text) = remove(b_addr.clone()).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("maintenance"), "{text}");
    let (status, _) = call(
        Method::POST,
        format!("/pools/p/backends/{b_addr}/maintenance"),
        String::new(),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = remove(b_addr.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(remove(b_addr.clone()).await.0, 404, "gone");
    for _ in 0..10 {
        assert_eq!(c.get(&url).await.status, 200);
    }
    assert_eq!(
        b.stats().requests,
        to_b,
        "a removed backend takes no requests"
    );
    let config = c
        .request(
            Method::GET,
            &node.admin_url("/config"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap()
        .json();
    assert!(
        config["admin_overrides"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["backend"] != b_addr.as_str()),
        "added then removed: nothing to list: {config}"
    );
    call(
        Method::POST,
        format!("/pools/p/backends/{a_addr}/disable"),
        String::new(),
        true,
    )
    .await;
    let (status, text) = remove(a_addr.clone()).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("last backend"), "{text}");
    call(
        Method::POST,
        format!("/pools/p/backends/{a_addr}/enable"),
        String::new(),
        true,
    )
    .await;

    // A reload applies the file: the runtime changes are gone.
    add(format!(r#"{{"address": "{b_addr}"}}"#), true).await;
    let (status, text) = call(Method::POST, "/reload".into(), String::new(), true).await;
    assert_eq!(status, 200, "{text}");
    let pools = c.get(&node.admin_url("/pools")).await.json();
    assert_eq!(pools[0]["backends"].as_array().unwrap().len(), 1, "{pools}");
    let config = c
        .request(
            Method::GET,
            &node.admin_url("/config"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap()
        .json();
    assert!(
        config["admin_overrides"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o.get("change").is_none()),
        "{config}"
    );
}
