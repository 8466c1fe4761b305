//! A client in another language: `tests/python/client.py` generates Python
//! stubs from the proto at test time (grpcio-tools) and registers, watches,
//! pushes and uses reflection against a real `cflux-manager`.
//!
//! Needs python3 with grpcio, grpcio-tools and grpcio-reflection
//! (`scripts/setup.sh` installs them).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use cflux::proto::ListClustersRequest;
use support::Manager;

const PYTHON_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_registers_watches_and_pushes() {
    let m = Manager::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let out_path = m.dir.path().join("python.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(m.addr.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .expect("run python3");
    let exited = support::wait::poll(PYTHON_DEADLINE, || {
        let status = child.try_wait();
        async move {
            status
                .map_err(|e| format!("cannot wait for python3: {e}"))?
                .ok_or_else(|| "still running".to_owned())
        }
    })
    .await;
    let status = match exited {
        Ok(status) => Some(status),
        Err(e) if e == "still running" => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
        Err(e) => panic!("{e}"),
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("--- python client ---\n{output}--- end ---");
    let status = status.unwrap_or_else(|| panic!("the python client ran over {PYTHON_DEADLINE:?}"));
    assert!(
        status.success(),
        "the python client failed ({status}):\n{output}"
    );
    assert!(output.contains("all checks passed"), "{output}");

    // What the Python client did is visible to a Rust client.
    let clusters = m
        .grpc_client()
        .await
        .list_clusters(ListClustersRequest {})
        .await
        .expect("ListClusters")
        .into_inner()
        .clusters;
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    assert!(clusters[0].name.starts_with("python-"));
    assert_eq!((clusters[0].version, clusters[0].nodes), (2, 0));
}
