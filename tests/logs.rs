//! What an operator reads when a process starts or fails to: log lines
//! without colour codes when stderr is no terminal, JSON lines with
//! `--log-format json` (for log shippers), and a second agent on a host
//! whose health address is taken failing at once in one line that names the
//! address and the flag to change — no panic, no backtrace.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::agent::{agent_bin, start_nodes, AgentOptions};
use support::influxd::InfluxdOptions;
use support::process::{clean_env, free_port};
use support::{eventually, Manager};

/// How long a process may take to write its first lines, or to exit.
const DEADLINE: Duration = Duration::from_secs(20);

/// The first lines a manager with `args` writes to stderr (a file: no
/// terminal), colour not switched off by `NO_COLOR`.
async fn manager_log(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log_path = dir.path().join("manager.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(Manager::bin());
    clean_env(&mut command);
    let mut child = command
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run cflux-manager");
    let text = eventually(DEADLINE, "the manager's first log lines", || {
        let text = read(&log_path);
        async move {
            if text.ends_with('\n') {
                Ok(text)
            } else {
                Err(text)
            }
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    text
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_without_a_terminal() {
    let text = manager_log(&[]).await;
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains("\x1b["), "colour codes in a file: {text:?}");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let text = manager_log(&["--log-format", "json"]).await;
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}"));
        assert_eq!(entry["level"], "INFO", "{line}");
        assert!(entry["timestamp"].is_string(), "{line}");
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
    assert!(!text.contains("\x1b["), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_a_taken_health_address_fails_in_one_line() {
    let manager = Manager::start().await;
    let nodes = start_nodes(
        1,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), "prod"),
    )
    .await;
    let first = &nodes[0];
    first.agent.wait_registered(DEADLINE).await;
    let taken = first.agent.listen.to_string();
    let state = tempfile::tempdir().expect("temporary directory");

    let mut command = Command::new(agent_bin());
    clean_env(&mut command);
    command
        .args(["--cflux-endpoint", &manager.url(), "--cluster", "prod"])
        .args(["--influxdb-url", &first.influxd.url()])
        .arg("--meta-dir")
        .arg(first.influxd.meta_dir())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--listen", &taken])
        // Even asked for one, nothing prints a backtrace.
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let second = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || command.output().expect("run cflux-agent")),
    )
    .await
    .expect("the second agent exits at once")
    .expect("the agent's process");

    assert!(!second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&taken) && lines[0].contains("--listen"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    // It did not get as far as registering a second node.
    let mut grpc = manager.grpc_client().await;
    assert_eq!(support::list_nodes(&mut grpc, "prod").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_on_a_taken_address_fails_in_one_line() {
    let first = Manager::start().await;
    let taken = first.addr.to_string();
    let data = tempfile::tempdir().expect("temporary directory");
    let mut command = Command::new(Manager::bin());
    clean_env(&mut command);
    command
        .args(["--listen", &taken])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let second = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || command.output().expect("run cflux-manager")),
    )
    .await
    .expect("the second manager exits at once")
    .expect("the manager's process");
    assert!(!second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&taken) && lines[0].contains("--listen") && lines[0].contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
