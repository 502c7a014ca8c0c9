//! Micro benchmarks of the request path's hot spots: route matching and
//! backend selection. `cargo bench -p edge-benches`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_proxy::metrics::ProxyMetrics;
use edge_proxy::pool::{BackendRegistry, Pool};
use edge_proxy::route::{RequestView, RouteTable};

fn config(routes: usize, algorithm: &str) -> edge_config::Config {
    config_with(routes, algorithm, 20)
}

fn config_with(routes: usize, algorithm: &str, backends: usize) -> edge_config::Config {
    let mut text = String::from("[[pool]]\nname = \"p\"\n");
    text.push_str(&format!("algorithm = \"{algorithm}\"\nbackends = ["));
    for i in 0..backends {
        text.push_str(&format!(
            "{{ address = \"10.{}.{}.{}:80\", weight = {} }},",
            i / 62500,
            i / 250 % 250,
            i % 250 + 1,
            1 + i % 3
        ));
    }
    text.push_str("]\n");
    for i in 0..routes {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\npriority = {i}\npool = \"p\"\n[route.match]\nhost = \"h{i}.example.com\"\npath_prefix = \"/v{i}/\"\nmethods = [\"GET\"]\n"
        ));
    }
    text.push_str("[[route]]\nname = \"default\"\npool = \"p\"\n");
    edge_config::parse_str(&text, "bench.toml", Path::new(".")).expect("bench config")
}

fn route_matching(c: &mut Criterion) {
    let cfg = config(50, "round_robin");
    let metrics = ProxyMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let table = RouteTable::compile(&cfg.routes, |_| Some(0), &metrics).expect("routes");
    let headers = http::HeaderMap::new();
    let method = http::Method::GET;
    c.bench_function("route match: 51 routes, hit in the middle", |b| {
        b.iter(|| {
            let view = RequestView {
                listener: "web",
                host: "h25.example.com",
                path: "/v25/seg_1.ts",
                query: None,
                method: &method,
                headers: &headers,
                cookies: &[],
            };
            std::hint::black_box(table.find(&view).map(|r| r.name.len()))
        })
    });
    c.bench_function("route match: 51 routes, fall through to default", |b| {
        b.iter(|| {
            let view = RequestView {
                listener: "web",
                host: "other.example.com",
                path: "/x",
                query: None,
                method: &method,
                headers: &headers,
                cookies: &[],
            };
            std::hint::black_box(table.find(&view).map(|r| r.name.len()))
        })
    });
}

/// Cost against the table's size (issue 17): the request matches the
/// last host route of 1 and of 10,000.
fn route_scale(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    let method = http::Method::GET;
    for n in [1usize, 10_000] {
        let cfg = config(n, "round_robin");
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let table = RouteTable::compile(&cfg.routes, |_| Some(0), &metrics).expect("routes");
        let host = format!("h{}.example.com", n - 1);
        let path = format!("/v{}/seg_1.ts", n - 1);
        c.bench_function(
            &format!("route match: {n} host routes, hit the last"),
            |b| {
                b.iter(|| {
                    let view = RequestView {
                        listener: "web",
                        host: &host,
                        path: &path,
                        query: None,
                        method: &method,
                        headers: &headers,
                        cookies: &[],
                    };
                    std::hint::black_box(table.find(&view).map(|r| r.name.len()))
                })
            },
        );
    }
}

/// Cost against the pool's size (issue 17): 1 and 10,000 backends.
fn selection_scale(c: &mut Criterion) {
    for algorithm in [
        "round_robin",
        "weighted_round_robin",
        "least_requests",
        "p2c_ewma",
    ] {
        for n in [1usize, 10_000] {
            let cfg = config_with(0, algorithm, n);
            let metrics = ProxyMetrics::new(&prometheus::Registry::new()).expect("metrics");
            let pool = Pool::build(
                &cfg.pools[0],
                &BackendRegistry::default(),
                &metrics,
                &edge_proxy::pool::Resolved::new(),
            )
            .expect("pool");
            c.bench_function(&format!("pick: {algorithm}, {n} backends"), |b| {
                b.iter(|| std::hint::black_box(pool.select(&[], None, None).map(|p| p.index).ok()))
            });
        }
    }
}

/// A RAM hit's response head: rebuilt from the kept header lines (now)
/// against a clone of a kept `ResponseHeader` with its case map (before).
fn hit_head(c: &mut Criterion) {
    use std::time::{Duration, SystemTime};
    let mut h = pingora_http::ResponseHeader::build(200, None).expect("header");
    for (k, v) in [
        ("Server", "nginx/1.22.1"),
        ("Date", "Tue, 01 Dec 2026 02:00:00 GMT"),
        ("Content-Type", "video/mp2t"),
        ("Content-Length", "1024"),
        ("Last-Modified", "Mon, 30 Nov 2026 12:00:00 GMT"),
        ("ETag", "\"6565a0c0-400\""),
        ("Cache-Control", "public, max-age=3600"),
        ("Accept-Ranges", "bytes"),
    ] {
        h.insert_header(k, v).expect("field");
    }
    let now = SystemTime::now();
    let meta = pingora_cache::CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h)
        .serialize()
        .expect("meta");
    let kept = pingora_cache::CacheMeta::deserialize(&meta.0, &meta.1)
        .expect("meta")
        .response_header_copy();
    let obj = edge_cache::object::Object::new(meta, bytes::Bytes::new(), Default::default());
    let parsed = obj.parsed().expect("parsed");
    c.bench_function("hit head: rebuilt from the kept lines", |b| {
        b.iter(|| std::hint::black_box(parsed.header()))
    });
    c.bench_function("hit head: clone of a kept header (before)", |b| {
        b.iter(|| std::hint::black_box(kept.clone()))
    });
}

fn selection(c: &mut Criterion) {
    for algorithm in [
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_requests",
        "p2c_ewma",
        "consistent_hash",
    ] {
        let cfg = config(0, algorithm);
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let pool = Pool::build(
            &cfg.pools[0],
            &BackendRegistry::default(),
            &metrics,
            &edge_proxy::pool::Resolved::new(),
        )
        .expect("pool");
        c.bench_function(&format!("pick: {algorithm}, 20 backends"), |b| {
            let mut k = 0u64;
            b.iter(|| {
                k += 1;
                let key = k.to_le_bytes();
                std::hint::black_box(pool.select(&[], None, Some(&key)).map(|p| p.index).ok())
            })
        });
    }
}

criterion_group!(
    benches,
    route_matching,
    route_scale,
    hit_head,
    selection,
    selection_scale
);
criterion_main!(benches);
