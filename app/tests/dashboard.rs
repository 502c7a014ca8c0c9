//! The admin dashboard in a real browser: Debian's chromium, headless,
//! driven through chromedriver (WebDriver) by fantoccini. The page must
//! load with no console errors, show live traffic and a backend that is
//! down, and its drain button must work with the token and be refused
//! without it; a backend added from the page appears, and removed (after
//! maintenance) goes. A screenshot goes to `target/tmp/dashboard.png`.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edge_testkit::{eventually, origin, Client, EdgeNode};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{ClientBuilder, Locator};
use http::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "dashboard-test-token-0123456789";

/// chromedriver in its own process group: dropping it ends the browser
/// it started too, even when the test fails half way.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; `make test` installs it)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver ended before it said its port")
                .unwrap();
            // "ChromeDriver was started successfully on port 37197."
            if let Some(rest) = line.split("successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().parse().unwrap();
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Driver {
            child,
            port,
            _profile: profile,
        }
    }

    fn capabilities(&self) -> serde_json::Map<String, Value> {
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1400,1100".into(),
            format!("--user-data-dir={}", self._profile.path().display()),
        ];
        args.push("--disable-extensions".into());
        let mut options = json!({ "args": args });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        caps.as_object().unwrap().clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// chromedriver's browser console log (`goog:loggingPrefs`); each call
/// returns what was logged since the previous one.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(r#"{"type":"browser"}"#.to_string()))
    }
}

async fn console(browser: &fantoccini::Client) -> Vec<Value> {
    match browser.issue_cmd(BrowserLog).await.unwrap() {
        Value::Array(entries) => entries,
        other => panic!("browser log: {other}"),
    }
}

fn severe(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn text_of(browser: &fantoccini::Client, css: &str) -> Option<String> {
    let el = browser.find(Locator::Css(css)).await.ok()?;
    el.text().await.ok()
}

/// Waits until the element at `css` has text for which `ok` holds.
async fn wait_text(browser: &fantoccini::Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) {
    eventually(Duration::from_secs(15), what, || async {
        text_of(browser, css).await.filter(|t| ok(t)).map(|_| ())
    })
    .await;
}

fn config(live: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
[server]
threads = 1
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "p"
backends = [{{ address = "{live}" }}, {{ address = "{dead}" }}]
[pool.health_check]
kind = "tcp"
interval = "100ms"
timeout = "100ms"
fall = 1

[[route]]
name = "video"
pool = "p"
[route.cache]

[cache]
"#
    )
}

async fn admin_state(c: &Client, node: &EdgeNode, backend: SocketAddr) -> String {
    let pools: Value =
        serde_json::from_str(&c.get(&node.admin_url("/pools")).await.text()).unwrap();
    let b = pools[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .unwrap()
        .clone();
    b["admin"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_state_and_its_buttons_need_the_token() {
    let live = origin("live").await;
    let dead = edge_testkit::refused_addr();
    let node = EdgeNode::start(BIN, &config(live.addr(), dead));
    node.wait_ready(Duration::from_secs(10));
    let c = Client::new();

    // The page and its parts come from the binary, under a policy that
    // lets nothing else load.
    let page = c.get(&node.admin_url("/")).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for asset in ["/dashboard.js", "/dashboard.css", "/favicon.svg"] {
        assert_eq!(c.get(&node.admin_url(asset)).await.status, 200, "{asset}");
    }
    let stats: Value =
        serde_json::from_str(&c.get(&node.admin_url("/stats")).await.text()).unwrap();
    assert_eq!(
        stats["metrics"]["edge_build_info"]["type"], "gauge",
        "{stats}"
    );

    // Traffic through the proxy while the page watches: bounded in count.
    let url = node.url("web", "/obj/seg.ts?size=4096");
    let traffic = tokio::spawn(async move {
        let c = Client::new();
        for i in 0..400 {
            let _ = c.get(&format!("{url}&n={}", i % 7)).await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });

    let driver = Driver::start();
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(driver.capabilities())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session through chromedriver");
    browser.goto(&node.admin_url("/")).await.unwrap();

    // Live: the page has polled a few times and shows what edge does.
    eventually(Duration::from_secs(15), "three polls", || async {
        let polls = browser
            .execute("return Number(document.body.dataset.polls || 0)", vec![])
            .await
            .ok()?;
        (polls.as_u64()? >= 3).then_some(())
    })
    .await;
    let live_row = format!("#pools tr[data-backend=\"{}\"]", live.addr());
    let dead_row = format!("#pools tr[data-backend=\"{dead}\"]");
    wait_text(
        &browser,
        &format!("{dead_row} td:nth-child(3)"),
        "the dead backend shown down",
        |t| t == "down",
    )
    .await;
    wait_text(
        &browser,
        &format!("{live_row} td:nth-child(3)"),
        "the live backend shown up",
        |t| t == "up",
    )
    .await;
    wait_text(
        &browser,
        "#routes tr[data-route=\"video\"] td:nth-child(3)",
        "the route's requests/s",
        |t| t.parse::<f64>().is_ok_and(|r| r > 0.0),
    )
    .await;
    wait_text(
        &browser,
        "#cache tr[data-tier=\"ram\"] td:nth-child(2)",
        "objects in RAM",
        |t| t.parse::<u64>().is_ok_and(|n| n > 0),
    )
    .await;
    wait_text(
        &browser,
        "#listeners tr[data-listener=\"web\"] td:nth-child(4)",
        "accepted connections",
        |t| t.parse::<u64>().is_ok_and(|n| n > 0),
    )
    .await;
    wait_text(&browser, "#hit-ratio", "a hit ratio", |t| t.ends_with('%')).await;
    let errors = severe(&console(&browser).await);
    assert!(
        errors.is_empty(),
        "console errors while loading: {errors:?}"
    );

    // Without the token, drain is refused and nothing changes.
    let drain = format!("{live_row} button[data-action=\"drain\"]");
    browser
        .find(Locator::Css(&drain))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "#notice", "the refusal", |t| {
        t.contains("refused (401)")
    })
    .await;
    assert_eq!(admin_state(&c, &node, live.addr()).await, "enabled");

    // With it, the backend drains, and the page and the API say so.
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css(&drain))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "#notice", "the drain done", |t| {
        t.ends_with(": done")
    })
    .await;
    assert_eq!(admin_state(&c, &node, live.addr()).await, "draining");
    wait_text(
        &browser,
        &format!("{live_row} td:nth-child(4)"),
        "draining shown",
        |t| t == "draining",
    )
    .await;
    wait_text(
        &browser,
        "#events tbody",
        "the admin action in the events",
        |t| t.contains("backend state set through the admin API"),
    )
    .await;

    // A backend added from the page takes its place in the table; taken
    // out (maintenance) and removed, it leaves it.
    let extra = origin("extra").await;
    let extra_row = format!("#pools tr[data-backend=\"{}\"]", extra.addr());
    for (id, text) in [
        ("add-pool", "p".to_string()),
        ("add-address", extra.addr().to_string()),
    ] {
        browser
            .find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(&text)
            .await
            .unwrap();
    }
    browser
        .find(Locator::Css("#add-backend button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &browser,
        &format!("{extra_row} td:nth-child(2)"),
        "the added backend's row",
        |t| t == extra.addr().to_string(),
    )
    .await;
    let pools: Value =
        serde_json::from_str(&c.get(&node.admin_url("/pools")).await.text()).unwrap();
    assert_eq!(pools[0]["backends"].as_array().unwrap().len(), 3, "{pools}");
    for action in ["disable", "remove"] {
        browser
            .find(Locator::Css(&format!(
                "{extra_row} button[data-action=\"{action}\"]"
            )))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        if action == "disable" {
            wait_text(
                &browser,
                &format!("{extra_row} td:nth-child(4)"),
                "disabled shown",
                |t| t == "disabled",
            )
            .await;
        }
    }
    eventually(
        Duration::from_secs(15),
        "the removed backend's row gone",
        || async {
            browser
                .find(Locator::Css(&extra_row))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let pools: Value =
        serde_json::from_str(&c.get(&node.admin_url("/pools")).await.text()).unwrap();
    assert_eq!(pools[0]["backends"].as_array().unwrap().len(), 2, "{pools}");

    let shot = browser.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &shot).unwrap();
    println!("screenshot: {}", path.display());

    // The only console errors are the refused call's.
    let errors = severe(&console(&browser).await);
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "console errors: {errors:?}"
    );
    browser.close().await.unwrap();
    traffic.abort();
}
