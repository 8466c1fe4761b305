//! The web console in a real browser (`support::browser`: Debian's headless
//! Chromium driven by Selenium) against a real manager with a token and
//! three real nodes.
//!
//! `CFLUX_CONSOLE_SCREENSHOT=docs/console.png cargo test --release --test
//! console` also saves the screenshot the README shows.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{start_nodes, AgentOptions};
use support::browser::{shown, Browser};
use support::influxd::InfluxdOptions;
use support::{http, register, registration, with_token, Manager};

const TOKEN: &str = "console-test-token";
/// Node rows of the page, by state.
const ROWS: &str = "#nodes tbody tr";

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
