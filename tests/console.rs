//! The web console in a real browser: Debian's headless Chromium, driven by
//! Selenium (`tests/console/browser.py`, in a venv under `target/`), against
//! a real manager with a token and three real nodes.
//!
//! `CFLUX_CONSOLE_SCREENSHOT=docs/console.png cargo test --release --test
//! console` also saves the screenshot the README shows.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{start_nodes, AgentOptions};
use support::influxd::InfluxdOptions;
use support::wait::poll;
use support::{http, register, registration, with_token, Manager};

const TOKEN: &str = "console-test-token";
/// Node rows of the page, by state.
const ROWS: &str = "#nodes tbody tr";

/// A headless Chromium under Selenium; quits when dropped.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let python = selenium_venv().join("bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/console/browser.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut browser = Browser {
            child,
            stdin,
            stdout,
        };
        let ready = browser.read_answer();
        assert_eq!(
            ready,
            Ok(json!("ready")),
            "Chromium did not start (apt: chromium chromium-driver; scripts/setup.sh)"
        );
        browser
    }

    fn call(&mut self, command: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("browser driver gone: {e}"))?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("browser driver gone: {e}"))?;
        let mut answer: Value =
            serde_json::from_str(&line).map_err(|e| format!("driver said {line:?}: {e}"))?;
        match answer.get_mut("ok") {
            Some(value) => Ok(value.take()),
            None => Err(answer["error"].to_string()),
        }
    }

    fn open(&mut self, url: &str) {
        self.call(json!({"op": "open", "url": url}))
            .expect("open the console");
    }

    fn eval(&mut self, js: &str) -> Value {
        self.call(json!({"op": "eval", "js": js}))
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    fn count(&mut self, css: &str) -> u64 {
        let js = format!("return document.querySelectorAll({css:?}).length");
        self.eval(&js).as_u64().unwrap_or(0)
    }

    fn type_and_submit(&mut self, css: &str, text: &str) {
        self.call(json!({"op": "type", "css": css, "text": text}))
            .expect("type into the page");
    }

    /// Waits until `js` returns `true`, failing after `deadline` with what
    /// the page showed last.
    async fn wait_for(&mut self, deadline: Duration, what: &str, js: &str) {
        let shown = poll(deadline, || {
            let done = self.eval(js) == json!(true);
            let text = self.eval("return document.body.innerText");
            async move {
                if done {
                    Ok(())
                } else {
                    Err(text.to_string())
                }
            }
        })
        .await;
        if let Err(text) = shown {
            panic!("the console did not show {what} within {deadline:?}; it showed: {text}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin ends the driver's loop, which quits Chromium.
        let _ = writeln!(self.stdin);
        let _ = self.child.wait();
    }
}

/// A venv with Selenium under `target/`, created on first use.
fn selenium_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-venv");
    let python = venv.join("bin/python");
    let has_selenium = |p: &Path| {
        Command::new(p)
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_selenium(&python) {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(created, "python3 -m venv {} failed", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "selenium==4.51.0",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed && has_selenium(&python),
            "pip install selenium failed"
        );
    }
    venv
}

/// JavaScript: whether the element is displayed.
fn shown(css: &str) -> String {
    format!("getComputedStyle(document.querySelector({css:?})).display !== 'none'")
}

fn rows_in_state(state: &str) -> String {
    format!("return document.querySelectorAll('{ROWS}[data-state=\"{state}\"]').length")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_a_live_cluster() {
    let manager = Manager::start_with(&[
        "--token",
        TOKEN,
        "--node-ttl",
        "3s",
        "--heartbeat-interval",
        "1s",
    ])
    .await;
    let mut agent = AgentOptions::new(&manager.url(), "web");
    agent.args = vec!["--cflux-token".into(), TOKEN.into()];
    let mut nodes = start_nodes(3, &InfluxdOptions::default(), &agent).await;
    for n in &nodes {
        n.agent.wait_registered(Duration::from_secs(15)).await;
    }

    let mut browser = Browser::start();
    browser.open(&manager.http_url("/"));
    browser
        .wait_for(
            Duration::from_secs(10),
            "the token prompt",
            &format!("return {}", shown("#token-form")),
        )
        .await;
    browser.type_and_submit("#token", TOKEN);
    // Marks this page load: a reload would lose it.
    browser.eval("window.sameLoad = true; return null");
    browser
        .wait_for(
            Duration::from_secs(10),
            "three alive nodes",
            &format!("{} === 3", rows_in_state("alive")),
        )
        .await;

    nodes[0]
        .api()
        .exec("CREATE DATABASE console_shows_me")
        .await;
    browser
        .wait_for(
            Duration::from_secs(15),
            "the database created on node0",
            "return document.querySelector('[data-database=\"console_shows_me\"]') !== null",
        )
        .await;
    assert_eq!(
        browser.eval(&format!("return {}", shown("#token-form"))),
        json!(false)
    );
    // Every node reports the new version with its next heartbeat, and the
    // history panel lists the change.
    browser
        .wait_for(
            Duration::from_secs(15),
            "three nodes in sync, lag 0",
            &format!(
                "return [...document.querySelectorAll('{ROWS}')].filter((r) => r.dataset.sync === 'in-sync' && r.querySelector('.lag').textContent === 'in sync').length === 3"
            ),
        )
        .await;
    browser
        .wait_for(
            Duration::from_secs(5),
            "the current version first in the history panel",
            "const newest = document.querySelector('#changes tbody tr'); return newest !== null && 'version ' + newest.dataset.version === document.querySelector('#catalog-version').textContent",
        )
        .await;
    let api = nodes[1].api();
    api.exec("CREATE USER reader WITH PASSWORD 'a-secret-password'")
        .await;
    api.exec("GRANT READ ON console_shows_me TO reader").await;
    browser
        .wait_for(
            Duration::from_secs(15),
            "the user created on node1, with its grant",
            "return document.querySelector('tr[data-user=\"reader\"]')?.innerText.includes('read on console_shows_me') === true",
        )
        .await;
    assert_eq!(
        browser.eval(r"return /\$2[aby]\$/.test(document.body.innerHTML)"),
        json!(false),
        "a password hash reached the page"
    );

    // node1's influxd goes down: its agent cannot apply the next change,
    // and says so with its next heartbeat.
    let behind = nodes[1].agent.node_id().await.expect("registered");
    nodes[1].influxd.kill();
    nodes[0]
        .api()
        .exec("CREATE DATABASE while_node1_down")
        .await;
    browser
        .wait_for(
            Duration::from_secs(15),
            "node1 failing, one version behind, with its error",
            &format!(
                "const r = document.querySelector('{ROWS}[data-node-id=\"{behind}\"]'); return r?.dataset.sync === 'failing' && r.querySelector('.lag').textContent === '1 behind' && r.querySelector('.sync-error').textContent.startsWith('pull: ')"
            ),
        )
        .await;
    browser
        .wait_for(
            Duration::from_secs(5),
            "the newest change first in the history panel",
            "return document.querySelector('#changes tbody tr .summary')?.textContent.includes('+while_node1_down') === true",
        )
        .await;

    let dying = nodes[2].agent.node_id().await.expect("registered");
    nodes[2].agent.kill();
    // TTL 3 s, one listing tick, and slack for a loaded machine.
    browser
        .wait_for(
            Duration::from_secs(8),
            "the killed node as dead",
            &format!(
                "return document.querySelector('{ROWS}[data-node-id=\"{dying}\"]')?.dataset.state === 'dead'"
            ),
        )
        .await;
    assert_eq!(browser.count(&format!("{ROWS}[data-state=\"alive\"]")), 2);
    assert_eq!(
        browser.eval("return window.sameLoad === true"),
        json!(true),
        "the page reloaded"
    );

    if let Ok(path) = std::env::var("CFLUX_CONSOLE_SCREENSHOT") {
        browser
            .call(json!({"op": "screenshot", "path": path}))
            .expect("screenshot");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_token_the_console_shows_nothing() {
    let manager = Manager::start_with(&["--token", TOKEN]).await;
    let mut grpc = manager.grpc_client().await;
    grpc.register(with_token(registration("secret", "", "hidden-host"), TOKEN))
        .await
        .expect("register with the token");

    // The data stream refuses; the page itself loads (it holds no data).
    let events = manager.http_url("/console/events?cluster=secret");
    let refused = http().get(&events).send().await.expect("GET events");
    assert_eq!(refused.status(), 401);
    let wrong = http()
        .get(&events)
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("GET events");
    assert_eq!(wrong.status(), 401);
    let page = http()
        .get(manager.http_url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.expect("the page").contains("hidden-host"));

    let mut browser = Browser::start();
    browser.open(&manager.http_url("/"));
    browser
        .wait_for(
            Duration::from_secs(10),
            "the token prompt",
            &format!("return {}", shown("#token-form")),
        )
        .await;
    browser.type_and_submit("#token", "not-the-token");
    browser
        .wait_for(
            Duration::from_secs(10),
            "the refusal",
            "return document.querySelector('#token-error').textContent.includes('refused')",
        )
        .await;
    assert_eq!(browser.count(ROWS), 0);
    assert_eq!(
        browser.eval(&format!("return {}", shown("#content"))),
        json!(false)
    );
    assert_eq!(
        browser.eval("return document.body.innerText.includes('hidden-host')"),
        json!(false)
    );

    browser.type_and_submit("#token", TOKEN);
    browser
        .wait_for(
            Duration::from_secs(10),
            "the node, with the token",
            "return document.querySelector('tr[data-hostname=\"hidden-host\"]') !== null",
        )
        .await;
}

/// The stream without a token configured: open, and a node registered
/// through gRPC arrives as a `listing` event, the catalog and its history
/// as `catalog` and `history` events.
#[tokio::test]
async fn the_event_stream_carries_listings_and_catalogs() {
    let manager = Manager::start().await;
    let mut grpc = manager.grpc_client().await;
    register(&mut grpc, registration("plain", "", "plain-host")).await;
    let mut response = http()
        .get(manager.http_url("/console/events?cluster=plain"))
        .send()
        .await
        .expect("GET events");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: listing")
                && seen.contains("plain-host")
                && seen.contains("event: catalog")
                && seen.contains("event: history")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the stream said: {seen}");
}
