//! Sites: peer fill. Real `edge` processes on loopback, one per 127.0.0.x
//! address, forming one site in front of a scripted origin that counts
//! what it is asked. Each object has an owner among the site's healthy
//! nodes (rendezvous hashing); the others fetch it from the owner.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use edge_testkit::{eventually, metric_sum, Client, EdgeNode, Reply, Scripted};
use http::Method;
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "peer-fill-test-token-0123456789";
const HOST: (&str, &str) = ("host", "video.test");

/// One node of site `ams`: a cached route `/v/` to the origin; `peers`
/// lists every node of the site (itself too) as `(name, listener, admin)`.
fn config(
    o: &Scripted,
    name: &str,
    listen: &str,
    peers: &[(String, SocketAddr, SocketAddr)],
    keep: &str,
    cache: &str,
) -> String {
    let peers: String = peers
        .iter()
        .map(|(n, a, admin)| {
            format!("[[site.peer]]\nname = \"{n}\"\naddress = \"{a}\"\nadmin = \"{admin}\"\n")
        })
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
address = "{listen}"
h2c = true

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

[[route]]
name = "video"
match = {{ path_prefix = "/v/" }}
strip_prefix = "/v"
pool = "origin"
[route.cache]

[cache]
ram_size = "64 MiB"
{cache}

[site]
name = "ams"
node = "{name}"
keep_copies = "{keep}"
# Quick to notice, slow to doubt: a busy machine may miss one check.
[site.health_check]
kind = "tcp"
interval = "300ms"
timeout = "300ms"
rise = 1
fall = 3

{peers}
"#,
        o.addr()
    )
}

struct Site {
    nodes: Vec<Option<EdgeNode>>,
    names: Vec<String>,
    /// What each node's listener is configured with (port 0 at first).
    bind: Vec<String>,
    listen: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
    keep: String,
    /// More `[cache]` keys.
    cache: String,
}

impl Site {
    /// `n` nodes at 127.0.0.11, .12, …: started alone, then told of each
    /// other (their ports are known once they listen) by a reload.
    async fn start(o: &Scripted, n: usize, keep: &str) -> Site {
        Site::start_with(o, n, keep, "").await
    }

    async fn start_with(o: &Scripted, n: usize, keep: &str, cache: &str) -> Site {
        let mut site = Site {
            nodes: Vec::new(),
            names: (1..=n).map(|i| format!("n{i}")).collect(),
            bind: Vec::new(),
            listen: Vec::new(),
            admin: Vec::new(),
            keep: keep.to_string(),
            cache: cache.to_string(),
        };
        for i in 0..n {
            site.bind.push(format!("127.0.0.{}:0", 11 + i));
            let node = EdgeNode::start(
                BIN,
                &config(o, &site.names[i], &site.bind[i], &[], keep, cache),
            );
            node.wait_ready(Duration::from_secs(30));
            site.listen.push(node.addr("web"));
            site.admin.push(node.addr("admin"));
            site.nodes.push(Some(node));
        }
        for i in 0..n {
            site.reload(o, i).await;
        }
        site
    }

    fn peers(&self) -> Vec<(String, SocketAddr, SocketAddr)> {
        (0..self.names.len())
            .map(|i| (self.names[i].clone(), self.listen[i], self.admin[i]))
            .collect()
    }

    fn node(&self, i: usize) -> &EdgeNode {
        self.nodes[i].as_ref().unwrap()
    }

    async fn reload(&self, o: &Scripted, i: usize) {
        self.reload_with(o, i, &self.peers()).await;
    }

    async fn reload_with(
        &self,
        o: &Scripted,
        i: usize,
        peers: &[(String, SocketAddr, SocketAddr)],
    ) {
        let n = self.node(i);
        n.write_config(&config(
            o,
            &self.names[i],
            &self.bind[i],
            peers,
            &self.keep,
            &self.cache,
        ));
        let r = Client::new()
            .request(
                Method::POST,
                &n.admin_url("/reload"),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Node `i` again, at its old address, knowing the whole site; the
    /// others learn its new admin address.
    async fn restart(&mut self, o: &Scripted, i: usize) {
        self.bind[i] = self.listen[i].to_string();
        let node = EdgeNode::start(
            BIN,
            &config(
                o,
                &self.names[i],
                &self.bind[i],
                &self.peers(),
                &self.keep,
                &self.cache,
            ),
        );
        node.wait_ready(Duration::from_secs(30));
        self.admin[i] = node.addr("admin");
        self.nodes[i] = Some(node);
        for j in (0..self.names.len()).filter(|&j| j != i) {
            self.reload(o, j).await;
        }
    }

    async fn view(&self, i: usize) -> serde_json::Value {
        Client::new()
            .get(&self.node(i).admin_url("/site"))
            .await
            .json()
    }

    /// Waits until node `i` sees peer `name` usable (or not).
    async fn wait_peer(&self, i: usize, name: &str, usable: bool) {
        eventually(
            Duration::from_secs(20),
            &format!("{} to see {name} usable={usable}", self.names[i]),
            || async {
                let v = self.view(i).await;
                v["peers"]
                    .as_array()?
                    .iter()
                    .any(|p| p["name"] == name && p["usable"] == usable)
                    .then_some(())
            },
        )
        .await;
    }

    async fn metric(&self, i: usize, name: &str) -> f64 {
        let text = Client::new()
            .get(&self.node(i).admin_url("/metrics"))
            .await
            .text();
        metric_sum(&text, name, &[])
    }
}

fn segment(o: &Scripted, i: usize) {
    o.set(
        &format!("/seg/{i}.ts"),
        Reply::ok(&format!("segment {i}"), &[("cache-control", "max-age=600")]),
    );
}

async fn fetch(c: &Client, site: &Site, node: usize, i: usize) {
    let url = format!("http://{}/v/seg/{i}.ts", site.listen[node]);
    let r = c.get_with(&url, &[HOST]).await;
    assert_eq!(
        (r.status, r.text()),
        (200, format!("segment {i}")),
        "segment {i} at {}",
        site.names[node]
    );
}

fn counts(o: &Scripted, range: std::ops::Range<usize>) -> Vec<usize> {
    range.map(|i| o.count(&format!("/seg/{i}.ts"))).collect()
}

/// Objects asked at every node of a site reach the origin once each; each
/// node owns about a third; the owner is asked with a loop guard that says
/// "a hop inside the site", and the origin sees the site once. A node
/// killed without warning costs no client an error, and only its objects
/// move (each fetched once more, by its new owner); back, it owns exactly
/// those again. A purge at one node reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_fills_each_object_once_and_only_a_lost_nodes_objects_move() {
    let o = Scripted::start().await;
    for i in 0..300 {
        segment(&o, i);
    }
    let mut site = Site::start(&o, 3, "never").await;
    let c = Client::new();
    let mut rng = fastrand::Rng::with_seed(7);

    // 200 objects, each asked 3 times at random nodes.
    for _round in 0..3 {
        for i in 0..200 {
            fetch(&c, &site, rng.usize(0..3), i).await;
        }
    }
    assert_eq!(
        counts(&o, 0..200),
        vec![1; 200],
        "one origin request per object"
    );
    // The origin sees the site once; a miss first asked at a non-owner
    // carries the hop inside the site before it.
    let mut hops = 0;
    for i in 0..200 {
        let lines = o.requests(&format!("/seg/{i}.ts"))[0].headers("cdn-loop");
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        if line != "ams" {
            assert!(
                line.starts_with("ams; peer=n") && line.ends_with(", ams") && line.len() == 17,
                "{line:?}"
            );
            hops += 1;
        }
    }
    assert!(
        hops > 50,
        "{hops} of 200 objects were first asked at a non-owner"
    );
    let mut shares = 0.0;
    let mut served = 0.0;
    for i in 0..3 {
        let v = site.view(i).await;
        let share = v["owned_share"].as_f64().unwrap();
        assert!((share - 1.0 / 3.0).abs() < 0.05, "{}: {v}", site.names[i]);
        shares += share;
        served += site.metric(i, "edge_site_served_to_peers_total").await;
        // Every node sees the same split: its view of a peer's share
        // matches that peer's own.
        for p in v["peers"].as_array().unwrap() {
            assert_eq!(p["usable"], true, "{v}");
        }
    }
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(served > 0.0, "owners served their peers");

    // n2 dies without a word: misses of its objects at n1 and n3 go to the
    // origin at once (no client error), before any health check noticed.
    site.node(1).signal(Signal::SIGKILL);
    site.nodes[1]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10));
    for i in 200..260 {
        fetch(&c, &site, if i % 2 == 0 { 0 } else { 2 }, i).await;
    }
    site.wait_peer(0, "n2", false).await;
    site.wait_peer(2, "n2", false).await;
    let before = counts(&o, 0..200);
    for i in 0..200 {
        fetch(&c, &site, 0, i).await;
        fetch(&c, &site, 2, i).await;
    }
    let after = counts(&o, 0..200);
    let moved: BTreeSet<usize> = (0..200).filter(|&i| after[i] != before[i]).collect();
    for &i in &moved {
        assert_eq!(
            after[i], 2,
            "segment {i}: fetched once more, by its new owner"
        );
    }
    let share = moved.len() as f64 / 200.0;
    assert!(
        (0.2..0.47).contains(&share),
        "n2 owned {share} of the objects"
    );
    for i in 0..2 {
        let v = site.view(if i == 0 { 0 } else { 2 }).await;
        assert!(
            (v["owned_share"].as_f64().unwrap() - 0.5).abs() < 0.05,
            "{v}"
        );
    }

    // n2 back (empty): exactly the objects it owned before come home. Asked
    // at n2, it fills those from the origin and fetches the rest from
    // their owners; n1 and n3 still serve the copies they filled meanwhile.
    site.restart(&o, 1).await;
    site.wait_peer(0, "n2", true).await;
    site.wait_peer(2, "n2", true).await;
    for i in 0..200 {
        fetch(&c, &site, 1, i).await;
    }
    let back = counts(&o, 0..200);
    let refilled: BTreeSet<usize> = (0..200).filter(|&i| back[i] != after[i]).collect();
    assert_eq!(
        refilled, moved,
        "the objects that moved away move back, no others"
    );
    for i in 0..200 {
        fetch(&c, &site, rng.usize(0..3), i).await;
    }
    assert_eq!(counts(&o, 0..200), back);

    // A purge at n1 reaches the whole site: the owner fetches again.
    let r = c
        .request(
            Method::POST,
            &site.node(0).admin_url("/cache/purge"),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            r#"{"url": "http://video.test/v/seg/5.ts"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let nodes: Vec<&str> = v["site"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n2", "n3"], "{v}");
    assert!(
        v["site"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "ok"),
        "{v}"
    );
    let purged: u64 = v["purged"].as_u64().unwrap()
        + v["site"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["purged"].as_u64().unwrap())
            .sum::<u64>();
    assert!(purged >= 1, "{v}");
    let n = o.count("/seg/5.ts");
    for node in 0..3 {
        fetch(&c, &site, node, 5).await;
    }
    assert_eq!(o.count("/seg/5.ts"), n + 1, "one refill for the whole site");
}

/// A new live segment asked by 30 clients spread over the site's nodes at
/// once reaches the origin once: each node coalesces its clients into one
/// request to the owner, which coalesces the site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_on_three_nodes_make_one_origin_request() {
    let o = Scripted::start().await;
    let site = Site::start(&o, 3, "hot").await;
    for round in 0..3 {
        let path = format!("/seg/live-{round}.ts");
        o.set(
            &path,
            Reply::ok("live", &[("cache-control", "max-age=2")])
                .with_delay(Duration::from_millis(300)),
        );
        let mut tasks = Vec::new();
        for k in 0..30 {
            let url = format!("http://{}/v{path}", site.listen[k % 3]);
            tasks.push(tokio::spawn(async move {
                let r = Client::new().get_with(&url, &[HOST]).await;
                (r.status, r.text())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), (200, "live".to_string()));
        }
        assert_eq!(o.count(&path), 1, "{path}");
    }
}

/// `keep_copies`: a node that does not own an object keeps no copy
/// (`never`), one from the second fetch (`hot`), or one at once (`always`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owner_keeps_copies_as_configured() {
    let o = Scripted::start().await;
    for i in 0..40 {
        segment(&o, i);
    }
    let mut site = Site::start(&o, 2, "never").await;
    let c = Client::new();
    // Objects n2 owns: asked at n1, n2 serves them to its peer.
    let mut owned_by_n2 = Vec::new();
    for i in 0..40 {
        let served = site.metric(1, "edge_site_served_to_peers_total").await;
        fetch(&c, &site, 0, i).await;
        if site.metric(1, "edge_site_served_to_peers_total").await > served {
            owned_by_n2.push(i);
        }
    }
    assert!(owned_by_n2.len() >= 6, "{owned_by_n2:?}");
    assert_eq!(counts(&o, 0..40), vec![1; 40]);
    for (keep, objects, expect) in [
        ("never", &owned_by_n2[0..2], 3.0),
        ("hot", &owned_by_n2[2..4], 2.0),
        ("always", &owned_by_n2[4..6], 1.0),
    ] {
        site.keep = keep.to_string();
        site.reload(&o, 0).await;
        for &i in objects {
            let served = site.metric(1, "edge_site_served_to_peers_total").await;
            for _ in 0..3 {
                fetch(&c, &site, 0, i).await;
            }
            let now = site.metric(1, "edge_site_served_to_peers_total").await;
            assert_eq!(now - served, expect, "keep_copies = {keep}, segment {i}");
        }
    }
    assert_eq!(counts(&o, 0..40), vec![1; 40], "the origin saw each once");
}

/// A large object is cached in slices, each under its own key and so with
/// its own owner: ranges and whole reads at every node are served from the
/// site's slices, and the origin sends each slice once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slices_of_a_large_object_are_spread_over_the_site_and_fetched_once() {
    const MIB: usize = 1 << 20;
    let o = Scripted::start().await;
    let body: String = (0..5 * MIB + 777)
        .map(|i| char::from(b'a' + (i % 7919 % 26) as u8))
        .collect();
    let total = body.len();
    o.set(
        "/big.mp4",
        Reply::ok(
            &body,
            &[("cache-control", "max-age=600"), ("etag", "\"b\"")],
        )
        .with_ranges(),
    );
    let site = Site::start_with(
        &o,
        3,
        "never",
        "slice_size = \"1 MiB\"\nslice_threshold = \"1 MiB\"",
    )
    .await;
    let c = Client::new();
    let url = |n: usize| format!("http://{}/v/big.mp4", site.listen[n]);
    for n in 0..3 {
        for (a, b) in [
            (0, 99),
            (MIB - 10, MIB + 10),
            (total - 50, total - 1),
            (3 * MIB, 4 * MIB),
        ] {
            let r = c
                .get_with(&url(n), &[HOST, ("range", &format!("bytes={a}-{b}"))])
                .await;
            assert_eq!(r.status, 206, "{n}: {a}-{b}");
            assert!(
                r.body == body.as_bytes()[a..=b],
                "{n}: {a}-{b}: wrong bytes"
            );
        }
        let r = c.get_with(&url(n), &[HOST]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == body.as_bytes(), "node {n}: whole object");
    }
    let mut ranges: Vec<String> = o
        .requests("/big.mp4")
        .iter()
        .flat_map(|r| r.headers("range"))
        .collect();
    ranges.sort();
    let mut expect: Vec<String> = (0..6)
        .map(|i| format!("bytes={}-{}", i * MIB, i * MIB + MIB - 1))
        .collect();
    expect.sort();
    assert_eq!(ranges, expect, "each slice once, for the whole site");
    let fills: f64 = {
        let mut sum = 0.0;
        for n in 0..3 {
            sum += site.metric(n, "edge_site_peer_fills_total").await;
        }
        sum
    };
    assert!(fills > 0.0, "slices were fetched from their owners");
}

/// A slice whose owner answers an error (its origin failed) fails that
/// response, and only that: the slices this node holds stay (they were
/// purged as if the object had changed at the origin). The same for an
/// owner that answers 421 or anything that is not a slice at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_the_owner_cannot_give_does_not_purge_the_slices_kept_here() {
    const MIB: usize = 1 << 20;
    let o = Scripted::start().await;
    let body: String = (0..4 * MIB)
        .map(|i| char::from(b'a' + (i % 7919 % 26) as u8))
        .collect();
    let good = Reply::ok(
        &body,
        &[("cache-control", "max-age=600"), ("etag", "\"b\"")],
    )
    .with_ranges();
    o.set("/big.mp4", good.clone());
    let site = Site::start_with(
        &o,
        2,
        "always",
        "slice_size = \"1 MiB\"\nslice_threshold = \"1 MiB\"",
    )
    .await;
    let c = Client::new();
    let url = format!("http://{}/v/big.mp4", site.listen[0]);
    // Slices 0 and 1 kept at node 0 (fetched from their owners or the origin).
    for (a, b) in [(0, 99), (MIB, MIB + 99)] {
        let r = c
            .get_with(&url, &[HOST, ("range", &format!("bytes={a}-{b}"))])
            .await;
        assert_eq!(r.status, 206);
        assert!(r.body == body.as_bytes()[a..=b]);
    }
    let hit = |r: &edge_testkit::Response| {
        r.header("x-cache")
            .is_some_and(|v| v.to_ascii_uppercase().starts_with("HIT"))
    };
    let r = c.get_with(&url, &[HOST, ("range", "bytes=0-99")]).await;
    assert!(hit(&r), "slice 0 kept: {:?}", r.header("x-cache"));
    // The origin fails: slices 2 and 3 cannot be had, from the owner or not.
    o.set("/big.mp4", Reply::new(503, "down\n", &[]));
    let whole = Client::new().request(Method::GET, &url, &[HOST], "").await;
    assert!(
        whole.as_ref().map_or(true, |r| r.body.len() < body.len()),
        "the whole object cannot be complete"
    );
    // The origin back: what node 0 held is still there.
    o.set("/big.mp4", good);
    let before = o.count("/big.mp4");
    for (a, b) in [(0, 99), (MIB, MIB + 99)] {
        let r = c
            .get_with(&url, &[HOST, ("range", &format!("bytes={a}-{b}"))])
            .await;
        assert_eq!(r.status, 206);
        assert!(r.body == body.as_bytes()[a..=b]);
        assert!(hit(&r), "{a}-{b} still kept: {:?}", r.header("x-cache"));
    }
    assert_eq!(o.count("/big.mp4"), before, "served from the kept slices");
}

/// A prefill of an object stored in slices: the node that owns the
/// object reads it whole (each slice from its own owner), the others say
/// 421; no node is refused a slice halfway through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_object_is_prefilled_whole_by_its_owner_alone() {
    const MIB: usize = 1 << 20;
    let o = Scripted::start().await;
    let body: String = (0..4 * MIB + 3)
        .map(|i| char::from(b'a' + (i % 7919 % 26) as u8))
        .collect();
    o.set(
        "/big.mp4",
        Reply::ok(
            &body,
            &[("cache-control", "max-age=600"), ("etag", "\"b\"")],
        )
        .with_ranges(),
    );
    let site = Site::start_with(
        &o,
        3,
        "never",
        "slice_size = \"1 MiB\"\nslice_threshold = \"1 MiB\"",
    )
    .await;
    let c = Client::new();
    let url = |n: usize| format!("http://{}/v/big.mp4", site.listen[n]);
    let mut owners = Vec::new();
    for n in 0..3 {
        // Each node learns the object is large (it is served in slices).
        let r = c.get_with(&url(n), &[HOST, ("range", "bytes=0-9")]).await;
        assert_eq!(r.status, 206);
        let r = c
            .request(Method::GET, &url(n), &[HOST, ("edge-prefill", "1")], "")
            .await
            .unwrap_or_else(|e| panic!("node {n}: {e}"));
        match r.status {
            200 => {
                assert!(r.body == body.as_bytes(), "node {n}: the whole object");
                owners.push(n);
            }
            421 => {}
            s => panic!("node {n}: {s} {}", r.text()),
        }
    }
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
}

/// A peer that takes connections and never answers (a stopped process:
/// the kernel still accepts, so the TCP health check passes): a miss it
/// owns waits `[site.timeouts] first_byte`, then goes to the origin; no
/// client gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_costs_a_wait_not_an_error() {
    let o = Scripted::start().await;
    for i in 0..12 {
        segment(&o, i);
    }
    let site = Site::start_with(
        &o,
        2,
        "never",
        "[site.timeouts]\nconnect = \"1s\"\nfirst_byte = \"1s\"",
    )
    .await;
    site.wait_peer(0, "n2", true).await;
    site.node(1).signal(Signal::SIGSTOP);
    let c = Client::new();
    for i in 0..12 {
        fetch(&c, &site, 0, i).await;
    }
    assert_eq!(counts(&o, 0..12), vec![1; 12], "each from the origin once");
    assert!(
        site.metric(0, "edge_site_peer_fallbacks_total").await >= 1.0,
        "some were n2's"
    );
    site.node(1).signal(Signal::SIGCONT);
}

const SEGMENTS: usize = 40;
const SEGMENT_BYTES: usize = 300_000;

/// A VOD title: a master playlist of two renditions, each an init section
/// and `SEGMENTS` segments.
fn title(o: &Scripted) {
    o.set(
        "/t/master.m3u8",
        Reply::ok(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000,RESOLUTION=640x360\nlow/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1280x720\nhigh/index.m3u8\n",
            &[("content-type", "application/vnd.apple.mpegurl")],
        ),
    );
    for r in ["low", "high"] {
        let mut media = String::from(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n",
        );
        for i in 0..SEGMENTS {
            media.push_str(&format!("#EXTINF:4.0,\nseg_{i}.m4s\n"));
        }
        media.push_str("#EXT-X-ENDLIST\n");
        o.set(&format!("/t/{r}/index.m3u8"), Reply::ok(&media, &[]));
        o.set(
            &format!("/t/{r}/init.mp4"),
            Reply::ok(&format!("init {r}"), &[("cache-control", "max-age=600")]),
        );
        for i in 0..SEGMENTS {
            let body: String =
                std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), SEGMENT_BYTES).collect();
            o.set(
                &format!("/t/{r}/seg_{i}.m4s"),
                Reply::ok(&body, &[("cache-control", "max-age=600")]),
            );
        }
    }
}

async fn admin(
    site: &Site,
    i: usize,
    method: Method,
    path: &str,
    body: &str,
) -> edge_testkit::Response {
    Client::new()
        .request(
            method,
            &site.node(i).admin_url(path),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
        .unwrap()
}

/// Prefill of one title's `high` rendition, run on every node of a site
/// under a site cap of 50 Mbit/s: each node fills only what it owns, so
/// the origin sends each object once; no 1 s window of origin requests
/// carries more than the cap (and a segment in flight per node); every
/// segment is then served at every node without the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_prefills_a_title_once_under_its_bandwidth_cap() {
    let o = Scripted::start().await;
    title(&o);
    let site = Site::start(&o, 3, "never").await;
    let cap_bits = 50_000_000.0;
    let job = r#"{"urls": ["http://video.test/v/t/master.m3u8"], "renditions": ["high"], "rate": "50 Mbit/s"}"#;
    for i in 0..3 {
        let r = admin(&site, i, Method::POST, "/cache/prefill", job).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let mut totals = (0, 0, 0);
    for i in 0..3 {
        let v = eventually(Duration::from_secs(60), "prefill to finish", || async {
            let v = admin(&site, i, Method::GET, "/cache/prefill", "")
                .await
                .json();
            (v["phase"] == "done").then_some(v)
        })
        .await;
        assert_eq!(v["objects"], SEGMENTS as u64 + 1, "{v}");
        assert_eq!(v["failed"], 0, "{v}");
        totals.0 += v["fetched"].as_u64().unwrap();
        totals.1 += v["not_owned"].as_u64().unwrap();
        totals.2 += v["fresh"].as_u64().unwrap();
    }
    let objects = SEGMENTS as u64 + 1;
    assert_eq!(
        totals,
        (objects, 2 * objects, 0),
        "each node filled what it owns"
    );
    for i in 0..SEGMENTS {
        assert_eq!(o.count(&format!("/t/high/seg_{i}.m4s")), 1, "segment {i}");
        assert_eq!(o.count(&format!("/t/low/seg_{i}.m4s")), 0, "low {i}");
    }
    assert_eq!(o.count("/t/high/init.mp4"), 1);

    // Origin requests in any 1 s: at most the cap's worth, plus what a
    // node may have had in flight as a window opened.
    let mut at: Vec<std::time::Instant> = (0..SEGMENTS)
        .map(|i| o.requests(&format!("/t/high/seg_{i}.m4s"))[0].at)
        .collect();
    at.sort();
    let slack = 3.0 * 2.0 * SEGMENT_BYTES as f64;
    for (k, start) in at.iter().enumerate() {
        let n = at[k..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        let bytes = (n * SEGMENT_BYTES) as f64;
        assert!(
            bytes <= cap_bits / 8.0 + slack,
            "{n} segments began within 1 s of segment {k}"
        );
    }
    let span = at[at.len() - 1].duration_since(at[0]).as_secs_f64();
    let sent = ((SEGMENTS - 6) * SEGMENT_BYTES) as f64;
    assert!(
        span * cap_bits / 8.0 >= sent,
        "{SEGMENTS} segments in {span:.2} s"
    );

    // Every segment is now a hit at its owner: asked at every node, the
    // origin is not asked again.
    let c = Client::new();
    for i in 0..SEGMENTS {
        for n in 0..3 {
            let url = format!("http://{}/v/t/high/seg_{i}.m4s", site.listen[n]);
            let r = c.get_with(&url, &[HOST]).await;
            assert_eq!((r.status, r.body.len()), (200, SEGMENT_BYTES));
        }
        let reqs = o.requests(&format!("/t/high/seg_{i}.m4s"));
        assert_eq!(
            reqs.len(),
            1,
            "segment {i}: {:?}",
            reqs.iter().map(|r| r.head_text()).collect::<Vec<_>>()
        );
    }
    // A second run finds everything fresh or owned elsewhere.
    let r = admin(&site, 0, Method::POST, "/cache/prefill", job).await;
    assert_eq!(r.status, 202);
    let v = eventually(Duration::from_secs(30), "the second run", || async {
        let v = admin(&site, 0, Method::GET, "/cache/prefill", "")
            .await
            .json();
        (v["phase"] == "done").then_some(v)
    })
    .await;
    assert_eq!(v["fetched"], 0, "{v}");
    assert_eq!(
        v["fresh"].as_u64().unwrap() + v["not_owned"].as_u64().unwrap(),
        objects,
        "{v}"
    );
}

/// A job waiting for its window is kept on disk: the node restarted picks
/// it up where it was; a stopped job is gone for good. Bad requests are
/// refused with what is wrong, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_job_survives_a_restart_and_bad_jobs_are_refused() {
    let o = Scripted::start().await;
    title(&o);
    let disk = tempfile::tempdir().unwrap();
    let cache = format!(
        "disk_path = \"{}\"\ndisk_size = \"64 MiB\"",
        disk.path().display()
    );
    let mut site = Site::start_with(&o, 1, "never", &cache).await;
    for (bad, why) in [
        ("{", "bad prefill request"),
        (r#"{"urls": []}"#, "empty"),
        (
            r#"{"urls": ["http://video.test/a"], "window": "25:00-26:00"}"#,
            "window",
        ),
        (
            r#"{"urls": ["http://video.test/a"], "rate": "lots"}"#,
            "rate",
        ),
        (r#"{"urls": ["https://video.test/a"]}"#, "http://"),
        (
            r#"{"urls": ["http://video.test/a"], "speed": 1}"#,
            "unknown field",
        ),
    ] {
        let r = admin(&site, 0, Method::POST, "/cache/prefill", bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.text().contains(why), "{bad}: {}", r.text());
    }
    let r = admin(&site, 0, Method::GET, "/cache/prefill", "").await;
    assert_eq!(r.json()["phase"], "idle");
    let r = Client::new()
        .request(
            Method::POST,
            &site.node(0).admin_url("/cache/prefill"),
            &[],
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401, "the token is needed");

    // A window that opens in two hours, local time.
    let now = jiff::Zoned::now();
    let at = |h: i8| format!("{:02}:{:02}", (now.hour() + h) % 24, now.minute());
    let job = format!(
        r#"{{"urls": ["http://video.test/v/t/master.m3u8"], "window": "{}-{}"}}"#,
        at(2),
        at(3)
    );
    let r = admin(&site, 0, Method::POST, "/cache/prefill", &job).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let waiting = |v: &serde_json::Value| v["phase"] == "waiting for the window";
    eventually(Duration::from_secs(20), "the job to wait", || async {
        let v = admin(&site, 0, Method::GET, "/cache/prefill", "")
            .await
            .json();
        waiting(&v).then_some(())
    })
    .await;
    let v = admin(&site, 0, Method::GET, "/cache/prefill", "")
        .await
        .json();
    assert_eq!(
        v["objects"],
        2 * (SEGMENTS as u64 + 1),
        "both renditions: {v}"
    );
    assert_eq!(v["done"], 0);

    // SIGTERM, then the same config again: the job is back, still waiting.
    site.node(0).signal(Signal::SIGTERM);
    site.nodes[0]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(60));
    site.restart(&o, 0).await;
    let v = eventually(Duration::from_secs(20), "the job to resume", || async {
        let v = admin(&site, 0, Method::GET, "/cache/prefill", "")
            .await
            .json();
        waiting(&v).then_some(v)
    })
    .await;
    assert_eq!(v["spec"]["window"], format!("{}-{}", at(2), at(3)), "{v}");

    // Stopped, it does not come back.
    let r = admin(&site, 0, Method::DELETE, "/cache/prefill", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["phase"], "cancelled");
    site.node(0).signal(Signal::SIGTERM);
    site.nodes[0]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(60));
    site.restart(&o, 0).await;
    let r = admin(&site, 0, Method::GET, "/cache/prefill", "").await;
    assert_eq!(r.json()["phase"], "idle");
    // No segment was fetched: the window never opened.
    assert_eq!(o.count("/t/high/seg_0.m4s"), 0);
}

/// Peer fill is the same whatever the client speaks: HTTP/2 (h2c) misses
/// at any node reach the origin once per object, HEAD through a peer
/// answers the object's length without a body. Reloads that take a peer
/// out of a node's list and put it back, while that node serves, cost no
/// request an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_head_and_reloads_of_the_peer_list_go_through_the_site() {
    let o = Scripted::start().await;
    for i in 0..60 {
        segment(&o, i);
    }
    let site = Site::start(&o, 3, "never").await;
    for i in 0..30 {
        for n in 0..3 {
            let r = edge_testkit::h2c(
                site.listen[n],
                Method::GET,
                &format!("http://video.test/v/seg/{i}.ts"),
                &[],
            )
            .await
            .unwrap();
            assert_eq!(
                (r.status, r.text()),
                (200, format!("segment {i}")),
                "h2 {i} at {n}"
            );
        }
    }
    assert_eq!(
        counts(&o, 0..30),
        vec![1; 30],
        "HTTP/2 misses are filled once for the site"
    );
    let c = Client::new();
    for i in 0..30 {
        for n in 0..3 {
            let url = format!("http://{}/v/seg/{i}.ts", site.listen[n]);
            let r = c.request(Method::HEAD, &url, &[HOST], "").await.unwrap();
            assert_eq!(r.status, 200, "HEAD {i} at {n}");
            assert!(r.body.is_empty(), "HEAD {i} at {n}");
            assert_eq!(
                r.header("content-length"),
                Some(format!("segment {i}").len().to_string().as_str()),
                "HEAD {i} at {n}"
            );
        }
    }
    assert_eq!(
        counts(&o, 0..30),
        vec![1; 30],
        "HEAD of a stored object is answered from it"
    );

    // n1 serves a stream of misses and hits while its peer list loses n3
    // and gets it back, three times.
    let load = {
        let url = site.listen[0];
        tokio::spawn(async move {
            let c = Client::new();
            for k in 0..300usize {
                let i = 30 + k % 30;
                let r = c
                    .get_with(&format!("http://{url}/v/seg/{i}.ts"), &[HOST])
                    .await;
                assert_eq!(
                    (r.status, r.text()),
                    (200, format!("segment {i}")),
                    "request {k}"
                );
            }
        })
    };
    let all = site.peers();
    let without: Vec<_> = all.iter().filter(|p| p.0 != "n3").cloned().collect();
    for _ in 0..3 {
        site.reload_with(&o, 0, &without).await;
        site.reload_with(&o, 0, &all).await;
    }
    load.await.unwrap();
    for i in 30..60 {
        assert!(
            (1..=2).contains(&o.count(&format!("/seg/{i}.ts"))),
            "segment {i}"
        );
    }
}
