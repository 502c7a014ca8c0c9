//! `edge check` and `edge demo` as a user runs them.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use edge_testkit::{eventually, Client, EdgeNode};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn check_summarises_a_valid_file() {
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(root().join("config/examples/video-edge.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("video-edge.toml: ok"), "{text}");
    assert!(text.contains("2 listeners:"), "{text}");
    assert!(
        text.contains("https public-tls on 0.0.0.0:8443 (1 certificate)"),
        "{text}"
    );
    assert!(
        text.contains("origin (least_requests, 2 backends, health-checked)"),
        "{text}"
    );
}

#[test]
fn check_points_at_every_mistake() {
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(root().join("config/tests/invalid/28-many-errors-at-once.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("28-many-errors-at-once.toml: 5 errors"),
        "{err}"
    );
    assert!(err.contains("5 | threads = 0"), "{err}");
    assert!(
        err.contains("28-many-errors-at-once.toml:14:25: pool[0].backends[0].address"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_hls_through_the_edge_and_stops_on_ctrl_c() {
    let mut demo = EdgeNode::spawn_command(BIN, &["demo"]);
    demo.wait_ready(Duration::from_secs(60));
    let edge = demo.addr("edge");
    let c = Client::new();
    let master = c.get(&format!("http://{edge}/vod/bbb/master.m3u8")).await;
    assert_eq!(master.status, 200);
    assert!(master.text().contains("#EXT-X-STREAM-INF"));
    let seg = c.get(&format!("http://{edge}/vod/bbb/mid/seg_0.ts")).await;
    assert_eq!(seg.status, 200);
    assert_eq!(seg.body[0], 0x47);
    assert_eq!(seg.header("x-origin-name"), Some("demo-origin"));
    assert!(
        demo.output().contains("ffplay http://"),
        "{}",
        demo.output()
    );
    // Two sites' cache nodes run beside it, polled by its GeoDNS: a
    // Paris client is steered to ams-1, and the guide shows `edge explain`.
    let out = demo.output();
    assert!(
        out.contains("edge explain -c config/examples/demo.toml --client"),
        "{out}"
    );
    // The guide names the dashboard; it serves the page, and the numbers
    // it polls show the requests above.
    let dashboard = out
        .lines()
        .find(|l| l.trim_start().starts_with("dashboard"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the guide names the dashboard")
        .to_string();
    let page = c.get(&dashboard).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"/dashboard.js\""));
    // A request is counted when its log line is made, just after its
    // response is sent (as nginx's log phase): wait for both.
    eventually(Duration::from_secs(10), "both requests counted", || async {
        let stats = c.get(&format!("{dashboard}stats")).await.json();
        let served: f64 = stats["metrics"]["edge_http_requests_total"]["samples"]
            .as_array()
            .map(|samples| samples.iter().filter_map(|s| s["value"].as_f64()).sum())
            .unwrap_or(0.0);
        (served >= 2.0).then_some(())
    })
    .await;
    let ams_admin = out
        .lines()
        .find(|l| l.trim_start().starts_with("ams-1"))
        .and_then(|l| l.split("(admin ").nth(1))
        .and_then(|r| r.strip_suffix(')'))
        .expect("the guide names ams-1's admin")
        .to_string();
    let steer = format!("http://{edge}/steer?url=http://video.demo.edge/vod/bbb/low/seg_1.ts");
    let paris = Client::bound_to("127.0.1.1".parse().unwrap());
    eventually(Duration::from_secs(30), "ams-1 steered to", || async {
        let r = paris.get(&steer).await;
        (r.status == 200 && r.json()["targets"][0]["node"] == "ams-1").then_some(())
    })
    .await;
    assert_eq!(c.get(&ams_admin).await.json()["node"], "ams-1");
    demo.signal(Signal::SIGINT);
    let status = demo
        .wait_exit(Duration::from_secs(20))
        .expect("the demo stops on Ctrl-C");
    assert!(status.success(), "{status:?}");
    // Its site nodes stop with it.
    let gone = Client::new().with_timeout(Duration::from_secs(2));
    eventually(Duration::from_secs(10), "ams-1 stopped", || async {
        gone.request(http::Method::GET, &ams_admin, &[], Vec::new())
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_runs_alone() {
    let mut o = EdgeNode::spawn_command(
        BIN,
        &["origin", "--listen", "127.0.0.1:0", "--name", "solo"],
    );
    o.wait_ready(Duration::from_secs(30));
    let addr = o.addr("solo");
    let r = Client::new()
        .get(&format!("http://{addr}/vod/sintel/master.m3u8"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin-name"), Some("solo"));
    o.signal(Signal::SIGTERM);
    assert!(o
        .wait_exit(Duration::from_secs(10))
        .expect("stops")
        .success());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_one_access_line_per_request() {
    let origin = edge_testkit::origin("a").await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n[[route]]\nname = \"all\"\npool = \"p\"\n",
        origin.addr()
    );
    let node = EdgeNode::start_with(BIN, &config, &["--log-format", "json"], &[]);
    let r = Client::new()
        .get(&node.url("web", "/vod/bbb/low/seg_2.ts"))
        .await;
    assert_eq!(r.status, 200);
    node.wait_for_line("\"target\":\"access\"", Duration::from_secs(5));
    let line = node
        .output()
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .unwrap()
        .to_string();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "all");
    assert_eq!(v["pool"], "p");
    assert_eq!(v["path"], "/vod/bbb/low/seg_2.ts");
    assert_eq!(v["bytes"], 200_032);
    assert_eq!(v["backend"], origin.addr().to_string());
}

/// Every field a log pipeline expects, and one request id from the client
/// (or made by edge) to the origin and the log.
#[tokio::test(flavor = "multi_thread")]
async fn access_lines_carry_the_request_and_its_id_goes_upstream() {
    let origin = edge_testkit::Scripted::start().await;
    origin.set("/a?x=1", edge_testkit::Reply::ok("a", &[]));
    origin.set("/b", edge_testkit::Reply::ok("b", &[]));
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n[[route]]\nname = \"all\"\npool = \"p\"\n",
        origin.addr()
    );
    let node = EdgeNode::start_with(BIN, &config, &["--log-format", "json"], &[]);
    let c = Client::new();
    let r = c
        .get_with(
            &node.url("web", "/a?x=1"),
            &[
                ("user-agent", "player/1.0"),
                ("referer", "https://example.test/watch"),
                ("x-request-id", "req-42"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    // An id that is not a plain token is replaced by a UUID.
    let r = c
        .get_with(
            &node.url("web", "/b"),
            &[
                ("x-request-id", "a b <c>"),
                (
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                ),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    node.wait_for_line("\"path\":\"/b\"", Duration::from_secs(5));
    let lines: Vec<serde_json::Value> = node
        .output()
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let a = lines.iter().find(|v| v["path"] == "/a").unwrap();
    assert_eq!(a["scheme"], "http");
    assert_eq!(a["host"], node.addr("web").to_string());
    assert_eq!(a["query"], "x=1");
    assert_eq!(a["protocol"], "HTTP/1.1");
    assert_eq!(a["user_agent"], "player/1.0");
    assert_eq!(a["referer"], "https://example.test/watch");
    assert_eq!(a["request_id"], "req-42");
    assert_eq!(a["bytes_in"], 0);
    let seen = origin.requests("/a?x=1")[0]
        .head_text()
        .to_ascii_lowercase();
    assert!(seen.contains("x-request-id: req-42\r\n"), "{seen}");
    // W3C trace context: the client's trace goes on, edge's span its parent.
    let header = |seen: &str, name: &str| -> Option<String> {
        seen.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let parent = header(&seen, "traceparent").unwrap();
    assert!(
        parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert!(
        parent.ends_with("-01") && !parent.contains("00f067aa0ba902b7"),
        "{parent}"
    );
    assert_eq!(
        header(&seen, "tracestate").as_deref(),
        Some("congo=t61rcwkgmze")
    );
    assert_eq!(a["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let b = lines.iter().find(|v| v["path"] == "/b").unwrap();
    let id = b["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    let seen = origin.requests("/b")[0].head_text().to_ascii_lowercase();
    assert!(seen.contains(&format!("x-request-id: {id}\r\n")), "{seen}");
    assert!(!seen.contains("<c>"));
    // A traceparent edge cannot parse (upper case): a new, unsampled trace,
    // and no tracestate.
    let parent = header(&seen, "traceparent").unwrap();
    let trace = b["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(&parent[3..35], trace, "{parent}");
    assert!(parent.ends_with("-00"), "{parent}");
    assert_eq!(header(&seen, "tracestate"), None, "{seen}");
}

/// Every request edge sends on behalf of a client carries that client
/// request's id and trace: a cache miss's fetch, each slice subrequest of a
/// range, the segments a miss prefetches and the segment a RAM hit (served
/// on the fast path, which writes neither field on the request it
/// answers) prefetches. The client's trace goes on; the id edge made is
/// the one the client request's access line shows (a client's own id is
/// `access_lines_carry_the_request_and_its_id_goes_upstream`).
#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_and_trace_reach_every_fetch_a_client_request_causes() {
    const MIB: usize = 1 << 20;
    let origin = edge_testkit::Scripted::start().await;
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
        #EXTINF:2.0,\nseg_0.ts\n#EXTINF:2.0,\nseg_1.ts\n#EXTINF:2.0,\nseg_2.ts\n\
        #EXTINF:2.0,\nseg_3.ts\n#EXT-X-ENDLIST\n";
    let fields = |kind: &'static str| [("content-type", kind), ("cache-control", "max-age=600")];
    origin.set(
        "/v/index.m3u8",
        edge_testkit::Reply::ok(playlist, &fields("application/vnd.apple.mpegurl")),
    );
    for i in 0..4 {
        origin.set(
            &format!("/v/seg_{i}.ts"),
            edge_testkit::Reply::ok(&format!("segment {i}"), &fields("video/mp2t")),
        );
    }
    // LL-HLS: a preload hint, and a blocking reload the origin answers at once.
    let low_latency = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
        #EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nseg_0.ts\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part_1_0.mp4\"\n";
    for path in ["/ll/live.m3u8", "/ll/live.m3u8?_HLS_msn=1"] {
        origin.set(
            path,
            edge_testkit::Reply::ok(low_latency, &fields("application/vnd.apple.mpegurl")),
        );
    }
    origin.set(
        "/ll/part_1_0.mp4",
        edge_testkit::Reply::ok("part", &fields("video/mp4")),
    );
    let big = "m".repeat(3 * MIB + 1000);
    origin.set(
        "/big.mp4",
        edge_testkit::Reply {
            ranges: true,
            ..edge_testkit::Reply::ok(&big, &fields("video/mp4"))
        },
    );
    let config = format!(
        "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n[[route]]\nname = \"all\"\npool = \"p\"\n[route.cache]\nslice = true\n\
         [cache]\nslice_size = \"1 MiB\"\nslice_threshold = \"1 MiB\"\n",
        origin.addr()
    );
    let node = EdgeNode::start_with(BIN, &config, &["--log-format", "json"], &[]);
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let (c, url) = (c.clone(), node.url("web", path));
        async move { c.get_with(&url, headers).await }
    };
    // A range over three slices: three slice subrequests, with the id
    // edge made and the client's trace.
    let r = get(
        "/big.mp4",
        &[
            ("range", "bytes=100-2500000"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 2_500_000 - 100 + 1);
    // The playlist teaches the order; segment 0 (a miss) prefetches 1 and 2.
    assert_eq!(get("/v/index.m3u8", &[]).await.status, 200);
    assert_eq!(get("/v/seg_0.ts", &[]).await.status, 200);
    eventually(
        Duration::from_secs(10),
        "segments 1 and 2 prefetched",
        || async {
            (origin.count("/v/seg_1.ts") == 1 && origin.count("/v/seg_2.ts") == 1).then_some(())
        },
    )
    .await;
    // Segment 2 from RAM (the fast path) prefetches segment 3.
    let r = get("/v/seg_2.ts", &[]).await;
    assert!(
        r.header("x-cache").unwrap_or("-").starts_with("HIT"),
        "{:?}",
        r.header("x-cache")
    );
    eventually(Duration::from_secs(10), "segment 3 prefetched", || async {
        (origin.count("/v/seg_3.ts") == 1).then_some(())
    })
    .await;
    // The LL-HLS playlist stored by a prefill (which prefetches nothing),
    // then from RAM: the hinted part is prefetched after the hit.
    assert_eq!(
        get("/ll/live.m3u8", &[("edge-prefill", "1")]).await.status,
        200
    );
    let r = get("/ll/live.m3u8", &[]).await;
    assert!(
        r.header("x-cache").unwrap_or("-").starts_with("HIT"),
        "{:?}",
        r.header("x-cache")
    );
    eventually(
        Duration::from_secs(10),
        "the hinted part prefetched",
        || async { (origin.count("/ll/part_1_0.mp4") == 1).then_some(()) },
    )
    .await;
    // A blocking reload: its fetch is a subrequest.
    assert_eq!(get("/ll/live.m3u8?_HLS_msn=1", &[]).await.status, 200);
    node.wait_for_line("\"query\":\"_HLS_msn=1\"", Duration::from_secs(5));
    let lines: Vec<serde_json::Value> = node
        .output()
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The client's requests' lines (subrequests have none), in order.
    let nth = |path: &str, n: usize| lines.iter().filter(|v| v["path"] == path).nth(n).unwrap();
    let line = |path: &str| nth(path, 0);
    let field = |head: &str, name: &str| -> Option<String> {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let check_line = |fetched: &str, v: &serde_json::Value, want: usize| {
        let (id, trace) = (
            v["request_id"].as_str().unwrap(),
            v["trace_id"].as_str().unwrap(),
        );
        let seen = origin.requests(fetched);
        assert!(seen.len() >= want, "{fetched}: {} fetches", seen.len());
        for r in seen {
            let head = r.head_text().to_ascii_lowercase();
            assert_eq!(
                field(&head, "x-request-id").as_deref(),
                Some(id),
                "{fetched}: {head}"
            );
            assert_eq!(
                head.matches("x-request-id:").count(),
                1,
                "{fetched}: {head}"
            );
            let parent = field(&head, "traceparent").unwrap_or_default();
            assert_eq!(parent.get(3..35), Some(trace), "{fetched}: {head}");
            assert_eq!(head.matches("traceparent:").count(), 1, "{fetched}: {head}");
        }
    };
    let check = |fetched: &str, client_path: &str, want: usize| {
        check_line(fetched, line(client_path), want)
    };
    assert_eq!(
        line("/big.mp4")["request_id"].as_str().map(str::len),
        Some(36)
    );
    assert_eq!(
        line("/big.mp4")["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    check("/big.mp4", "/big.mp4", 3);
    let made = line("/v/seg_0.ts")["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 36, "edge made a UUID: {made}");
    check("/v/seg_0.ts", "/v/seg_0.ts", 1);
    check("/v/seg_1.ts", "/v/seg_0.ts", 1);
    check("/v/seg_2.ts", "/v/seg_0.ts", 1);
    check("/v/seg_3.ts", "/v/seg_2.ts", 1);
    assert_ne!(line("/v/seg_2.ts")["request_id"], made.as_str());
    // The part hinted at: the id of the request served from RAM (the
    // second); the blocking reload's fetch: the third's.
    let (hit, reload) = (nth("/ll/live.m3u8", 1), nth("/ll/live.m3u8", 2));
    assert_eq!(reload["query"], "_HLS_msn=1");
    assert_ne!(hit["request_id"], nth("/ll/live.m3u8", 0)["request_id"]);
    check_line("/ll/part_1_0.mp4", hit, 1);
    check_line("/ll/live.m3u8?_HLS_msn=1", reload, 1);
}

/// An OTLP/HTTP collector on 127.0.0.1:0: decodes each protobuf export
/// (the OpenTelemetry proto definitions) and keeps its spans with their
/// resource's `service.name`.
mod collector {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    pub type Seen = Arc<Mutex<Vec<(String, Span)>>>;

    pub fn service_name(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
        attribute(attrs, "service.name").unwrap_or_default()
    }

    pub fn attribute(
        attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
        key: &str,
    ) -> Option<String> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                other => format!("{other:?}"),
            })
    }

    pub async fn start() -> (SocketAddr, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let kept = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let ok = req.uri().path() == "/v1/traces"
                                    && req.headers().get("content-type").map(|v| v.as_bytes())
                                        == Some(b"application/x-protobuf")
                                    && req.headers().get("x-api-key").map(|v| v.as_bytes())
                                        == Some(b"k-123");
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let status = match ExportTraceServiceRequest::decode(body) {
                                    Ok(export) if ok => {
                                        let mut kept = kept.lock().unwrap();
                                        for rs in export.resource_spans {
                                            let name = service_name(
                                                &rs.resource
                                                    .map(|r| r.attributes)
                                                    .unwrap_or_default(),
                                            );
                                            for ss in rs.scope_spans {
                                                for span in ss.spans {
                                                    kept.push((name.clone(), span));
                                                }
                                            }
                                        }
                                        200
                                    }
                                    _ => 400,
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }
}

/// `server.otlp`: a sampled request becomes one server span at the
/// collector, with the client's span as parent and edge's span as what the
/// origin sees as its parent; unsampled traces are not sent; new traces
/// follow `sample_ratio`, changed by a reload; a 5xx is an error span.
#[tokio::test(flavor = "multi_thread")]
async fn sampled_requests_are_exported_as_otlp_spans() {
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    let origin = edge_testkit::Scripted::start().await;
    origin.set("/a?x=1", edge_testkit::Reply::ok("a", &[]));
    origin.set("/b", edge_testkit::Reply::ok("b", &[]));
    origin.set("/c", edge_testkit::Reply::ok("c", &[]));
    let (collector, seen) = collector::start().await;
    let config = |ratio: &str| {
        format!(
            "[server.otlp]\nendpoint = \"http://{collector}/v1/traces?tenant=QUERYKEY\"\nservice_name = \"edge-test\"\nsample_ratio = {ratio}\nheaders = {{ X-Api-Key = \"k-123\" }}\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n[[pool]]\nname = \"dead\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n[[route]]\nname = \"broken\"\npool = \"dead\"\n[route.match]\npath_prefix = \"/dead\"\n[[route]]\nname = \"all\"\npool = \"p\"\n",
            origin.addr()
        )
    };
    let node = EdgeNode::start(BIN, &config("0"));
    let c = Client::new();
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let r = c
        .get_with(
            &node.url("web", "/a?x=1"),
            &[("traceparent", sampled), ("user-agent", "player/2")],
        )
        .await;
    assert_eq!(r.status, 200);
    // Not sampled by the client, and new traces at ratio 0: not sent.
    let r = c
        .get_with(&node.url("web", "/b"), &[("traceparent", unsampled)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(c.get(&node.url("web", "/b")).await.status, 200);
    let a = eventually(Duration::from_secs(10), "the span of /a", || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().unwrap();
            seen.iter()
                .find(|(_, s)| {
                    collector::attribute(&s.attributes, "url.path").as_deref() == Some("/a")
                })
                .cloned()
        }
    })
    .await;
    let (service, span) = a;
    assert_eq!(service, "edge-test");
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET all");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let upstream = origin.requests("/a?x=1")[0]
        .head_text()
        .to_ascii_lowercase();
    assert!(
        upstream.contains(&format!(
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&span.span_id)
        )),
        "edge's span is the origin's parent: {upstream}"
    );
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/a"),
        ("url.query", "x=1"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "player/2"),
        ("client.address", "127.0.0.1"),
        ("edge.route", "all"),
        ("edge.pool", "p"),
    ] {
        assert_eq!(
            collector::attribute(&span.attributes, key).as_deref(),
            Some(want),
            "{key}"
        );
    }
    // A reload to ratio 1: new traces are sampled, and say so upstream.
    node.write_config(&config("1"));
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("config reloaded on SIGHUP", Duration::from_secs(10));
    let c_span = eventually(Duration::from_secs(20), "a new trace's span", || {
        let seen = seen.clone();
        let c = c.clone();
        let url = node.url("web", "/c");
        async move {
            assert_eq!(c.get(&url).await.status, 200);
            let seen = seen.lock().unwrap();
            seen.iter()
                .find(|(_, s)| {
                    collector::attribute(&s.attributes, "url.path").as_deref() == Some("/c")
                })
                .map(|(_, s)| s.clone())
        }
    })
    .await;
    assert!(
        c_span.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    let upstream = origin
        .requests("/c")
        .last()
        .unwrap()
        .head_text()
        .to_ascii_lowercase();
    assert!(upstream.contains("-01\r\n"), "{upstream}");
    // A 502 is an error span.
    let r = c.get(&node.url("web", "/dead/x")).await;
    assert_eq!(r.status, 502);
    let dead = eventually(Duration::from_secs(10), "the span of the 502", || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().unwrap();
            seen.iter()
                .find(|(_, s)| {
                    collector::attribute(&s.attributes, "url.path").as_deref() == Some("/dead/x")
                })
                .map(|(_, s)| s.clone())
        }
    })
    .await;
    assert_eq!(dead.status.unwrap().code, StatusCode::Error as i32);
    assert_eq!(
        collector::attribute(&dead.attributes, "error.type").as_deref(),
        Some("502")
    );
    // Only sampled requests were sent: /b never.
    let none_for_b = seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, s)| collector::attribute(&s.attributes, "url.path").as_deref() != Some("/b"));
    assert!(none_for_b);
    // The key in the endpoint's query and the header's value stay secret.
    let shown = c.get(&node.admin_url("/config")).await.text();
    assert!(shown.contains("/v1/traces?<redacted>"), "{shown}");
    assert!(
        !shown.contains("QUERYKEY") && !shown.contains("k-123"),
        "{shown}"
    );
    assert!(!node.output().contains("QUERYKEY"));
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edge_otlp_spans_total{result=\"exported\"}")),
        "{metrics}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn edge(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

/// `--version` names the commit; completions and the manual page cover
/// every subcommand; bad arguments are an error, not a panic.
#[test]
fn version_completions_and_manual_page() {
    let out = edge(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let inner = text
        .trim()
        .strip_prefix(&format!("edge {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        inner == "unknown" || (inner.len() == 12 && inner.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = edge(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["check", "reload", "prefill", "status"] {
            assert!(script.contains(sub), "{shell}: {sub}");
        }
    }
    let out = edge(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let out = edge(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH edge"),
        "{page}"
    );
    for sub in ["check", "run", "reload", "upgrade", "prefill", "status"] {
        assert!(page.contains(sub), "{sub}");
    }
}

/// `edge status` reads the running node's admin API: ready, its pools and
/// cache; a node that is not running is an error (exit 1) that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_running_node() {
    let config = r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9" }, { address = "127.0.0.1:1" }]
[[route]]
name = "all"
pool = "app"
[route.cache]
"#;
    let node = EdgeNode::start(BIN, config);
    node.wait_ready(Duration::from_secs(30));
    // `edge status -c` reads admin.listen from the file: the bound one.
    let admin = node.addr("admin");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.toml");
    std::fs::write(
        &file,
        config.replace(
            "127.0.0.1:0\"\n[[listener]]",
            &format!("{admin}\"\n[[listener]]"),
        ),
    )
    .unwrap();
    let out = edge(&["status", "-c", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("node {admin}: ready")), "{text}");
    assert!(text.contains("pool app: "), "{text}");
    assert!(text.contains("backends usable"), "{text}");
    assert!(text.contains("cache ram: "), "{text}");
    // The container HEALTHCHECK form: /live only, silent when it answers.
    let live = edge(&["status", "--live", "-c", file.to_str().unwrap()]);
    assert!(live.status.success(), "{live:?}");
    assert!(live.stdout.is_empty(), "{live:?}");
    drop(node);
    let out = edge(&["status", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin API at"), "{err}");
    let live = edge(&["status", "--live", "-c", file.to_str().unwrap()]);
    assert_eq!(live.status.code(), Some(1), "{live:?}");

    // Something else on the admin address that answers 200 to anything is
    // not taken for a ready node.
    let other = edge_testkit::Scripted::start().await;
    for path in [
        "/ready",
        "/live",
        "/pools",
        "/cache",
        "/site",
        "/cache/prefill",
    ] {
        other.set(path, edge_testkit::Reply::ok("hello", &[]));
    }
    std::fs::write(
        &file,
        config.replace(
            "127.0.0.1:0\"\n[[listener]]",
            &format!("{}\"\n[[listener]]", other.addr()),
        ),
    )
    .unwrap();
    for args in [&["status"][..], &["status", "--live"]] {
        let out = edge(&[args, &["-c", file.to_str().unwrap()]].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("edge admin API"), "{args:?}: {err}");
    }
}

/// `server.access_log_format`: the text access line as nginx's
/// `log_format` writes it, fields by name, `-` for what is missing.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_log_format_writes_the_line_as_the_template_says() {
    let origin = edge_testkit::origin("o").await;
    let config = format!(
        r#"
[server]
access_log_format = '$client "$method $path?$query" $status $bytes rid=$request_id ref=$referer ${{route}}/$pool $$ [$time_local]'

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "p"
backends = [{{ address = "{}" }}]

[[route]]
name = "all"
pool = "p"
"#,
        origin.addr()
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    let r = c
        .get_with(&node.url("web", "/obj/a?x=1"), &[("x-request-id", "req-7")])
        .await;
    assert_eq!(r.status, 200);
    node.wait_for_line("rid=req-7", Duration::from_secs(5));
    let out = node.output();
    let line = out.lines().find(|l| l.contains("rid=req-7")).unwrap();
    assert!(
        line.contains("127.0.0.1 \"GET /obj/a?x=1\" 200 1024 rid=req-7 ref=- all/p $ ["),
        "{line}"
    );
    // [01/Dec/2026:06:07:28 +0000]
    let time = line.rsplit('[').next().unwrap().trim_end_matches(']');
    assert_eq!(time.len(), 26, "{line}");
    assert!(time.ends_with(" +0000"), "{line}");
    assert!(
        !line.contains("user_agent="),
        "the template, not every field"
    );
}
