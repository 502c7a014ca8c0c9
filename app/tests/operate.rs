//! Operating edge: what an operator's actions (reloads, signals, the admin
//! API) can and cannot do to a node, and what it keeps secret.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edge_testkit::{Client, EdgeNode};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "operate-test-token-0123456789";
const REDIS_PASSWORD: &str = "hunter2-redis-password";
const UPSTREAM_SECRET: &str = "Bearer upstream-secret-value";

fn config_with_secrets() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[redis]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:1"
timeout = "50ms"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "r"
respond = {{ status = 200, body = "ok" }}
request_headers = {{ set = {{ authorization = "{UPSTREAM_SECRET}" }} }}
"#
    )
}

async fn admin(
    c: &Client,
    node: &EdgeNode,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = c
        .request(method, &node.admin_url(path), &headers, "")
        .await
        .unwrap();
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_secret_in_the_config_api_errors_and_logs() {
    let node = EdgeNode::start(BIN, &config_with_secrets());
    let c = Client::new();
    let secrets = [TOKEN, REDIS_PASSWORD, "upstream-secret-value"];

    let (status, _) = admin(&c, &node, Method::GET, "/config", None).await;
    assert_eq!(status, 401, "/config needs the token");
    let (status, _) = admin(
        &c,
        &node,
        Method::GET,
        "/config",
        Some("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = admin(&c, &node, Method::GET, "/config", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for s in secrets {
        assert!(!body.contains(s), "/config shows {s}: {body}");
    }
    assert!(body.contains("<redacted>"));
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let r = c
        .request(
            Method::GET,
            &node.admin_url("/config"),
            &[("authorization", &format!("bEaReR {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A broken file with the secrets in it: the refusal does not echo them.
    let broken = config_with_secrets().replace("@127.0.0.1:1\"", "@127.0.0.1:1\n");
    node.write_config(&broken);
    let (status, body) = admin(&c, &node, Method::POST, "/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    for s in secrets {
        assert!(!body.contains(s), "the refusal shows {s}: {body}");
    }
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("reload", Duration::from_secs(10));
    let (status, _) = admin(&c, &node, Method::GET, "/live", None).await;
    assert_eq!(status, 200);
    let out = node.output();
    for s in secrets {
        assert!(!out.contains(s), "the node's output shows {s}:\n{out}");
    }
}

fn small_config(extra_listener: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
{extra_listener}

[[route]]
name = "r"
respond = {{ status = 200, body = "still serving" }}
"#
    )
}

async fn still_serving(c: &Client, node: &EdgeNode) {
    let r = c.get(&node.url("web", "/")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "still serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_empty_the_node_unless_the_file_says_so() {
    let node = EdgeNode::start(BIN, &small_config(""));
    let c = Client::new();
    let reload = |node: &EdgeNode| {
        let c = c.clone();
        let url = node.admin_url("/reload");
        async move {
            c.request(
                Method::POST,
                &url,
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .await
            .unwrap()
        }
    };
    // An empty file, a file cut short after [admin], and one without the token.
    let admin_only = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let no_token = small_config("").replace(&format!("token = \"{TOKEN}\""), "");
    for (what, text) in [
        ("empty", String::new()),
        ("cut short", admin_only),
        ("no token", no_token),
    ] {
        node.write_config(&text);
        let r = reload(&node).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        assert!(r.text().contains("reload refused"), "{what}: {}", r.text());
        still_serving(&c, &node).await;
    }
    // SIGHUP takes the same path.
    node.write_config("");
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("reload refused", Duration::from_secs(10));
    still_serving(&c, &node).await;
    // Said on purpose, it applies.
    node.write_config(&format!(
        "listener = []\nroute = []\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    ));
    let r = reload(&node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(c
        .request(Method::GET, &node.url("web", "/"), &[], "")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_never_breaks_a_reload() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, small_config("")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut admin = None;
    {
        let stdout = child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("listening admin admin ") {
                admin = Some(a.to_string());
            }
            if line == "ready" {
                break;
            }
        }
        // The reader goes away: stdout is a pipe nobody reads.
    }
    let admin = admin.unwrap();
    // A reload that adds a listener announces it on stdout.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let extra =
        format!("[[listener]]\nname = \"more\"\nkind = \"http\"\naddress = \"127.0.0.1:{port}\"\n");
    std::fs::write(&path, small_config(&extra)).unwrap();
    let c = Client::new();
    let r = c
        .request(
            Method::POST,
            &format!("http://{admin}/reload"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get(&format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(r.text(), "still serving", "the new listener serves");
    // And later reloads still work (SIGHUP too).
    std::fs::write(&path, small_config("")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    edge_testkit::eventually(Duration::from_secs(10), "the listener to go", || async {
        c.request(Method::GET, &format!("http://127.0.0.1:{port}/"), &[], "")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the node is alive");
    let _ = child.kill();
    let _ = child.wait();
}
