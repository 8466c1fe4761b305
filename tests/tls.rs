//! Connecting to a manager that serves TLS (`--tls-cert`/`--tls-key`) with a
//! certificate of a private CA: `cfluxctl` and agents on both transports
//! trust it through `--cflux-ca`, carry their token from a file, and a
//! wrong CA is refused with an error that says why.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::agent::{start_nodes_with, AgentOptions};
use support::influxd::InfluxdOptions;
use support::{eventually, Manager};

const TOKEN: &str = "tls-test-token";

/// A private CA's certificate, as `ca.pem` in `dir`, and the issuer to sign with.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, ca.pem()).expect("write the CA");
    (path, ca)
}

/// A manager serving TLS with a certificate for 127.0.0.1 and localhost
/// signed by `ca`, requiring [`TOKEN`].
async fn tls_manager(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>) -> Manager {
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, ca).expect("server certificate");
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
    let manager = Manager::start_with(&[
        "--tls-cert",
        cert_path.to_str().expect("a UTF-8 path"),
        "--tls-key",
        key_path.to_str().expect("a UTF-8 path"),
        "--token",
        TOKEN,
    ])
    .await;
    assert!(manager.url().starts_with("https://"), "{}", manager.url());
    manager
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write the token");
    path
}

#[tokio::test]
async fn cfluxctl_trusts_the_given_ca_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, ca) = make_ca(dir.path(), "ca");
    let (wrong_ca, _) = make_ca(dir.path(), "wrong-ca");
    let manager = tls_manager(dir.path(), &ca).await;
    let token = token_file(dir.path());
    let ca_arg = ca_path.to_str().unwrap();
    let token_arg = token.to_str().unwrap();

    let listed = manager.ctl(&[
        "--cflux-ca",
        ca_arg,
        "--token-file",
        token_arg,
        "-o",
        "json",
        "clusters",
    ]);
    assert!(listed.status.success(), "{listed:?}");
    let clusters: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(clusters, serde_json::json!([]), "{listed:?}");

    let refused = manager.ctl(&[
        "--cflux-ca",
        wrong_ca.to_str().unwrap(),
        "--token-file",
        token_arg,
        "clusters",
    ]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("certificate"),
        "the error should say the certificate is not trusted: {stderr}"
    );

    // Without a CA file the system's roots are trusted, and they do not
    // know a private CA either.
    let system_roots = manager.ctl(&["--token-file", token_arg, "clusters"]);
    assert!(!system_roots.status.success(), "{system_roots:?}");

    let both = manager.ctl(&[
        "--cflux-ca",
        ca_arg,
        "--token",
        TOKEN,
        "--token-file",
        token_arg,
        "clusters",
    ]);
    assert!(!both.status.success());
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("not both"),
        "{both:?}"
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let empty = manager.ctl(&[
        "--cflux-ca",
        ca_arg,
        "--token-file",
        empty.to_str().unwrap(),
        "clusters",
    ]);
    assert!(!empty.status.success());
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("empty"),
        "{empty:?}"
    );
}

#[tokio::test]
async fn agents_on_both_transports_sync_through_a_tls_manager() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, ca) = make_ca(dir.path(), "ca");
    let manager = tls_manager(dir.path(), &ca).await;
    let token = token_file(dir.path());
    let extra: Vec<String> = vec![
        "--cflux-ca".into(),
        ca_path.display().to_string(),
        "--cflux-token-file".into(),
        token.display().to_string(),
    ];
    let nodes = start_nodes_with(2, &InfluxdOptions::default(), |i| {
        let options = AgentOptions::new(&manager.url(), "secure");
        let mut options = if i == 0 { options } else { options.legacy() };
        options.args = extra.clone();
        options
    })
    .await;

    let ca_arg = ca_path.to_str().unwrap();
    let token_arg = token.to_str().unwrap();
    eventually(
        Duration::from_secs(30),
        "both agents listed alive",
        || async {
            let out = manager.ctl(&[
                "--cflux-ca",
                ca_arg,
                "--token-file",
                token_arg,
                "-o",
                "json",
                "nodes",
                "--cluster",
                "secure",
            ]);
            let nodes: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
            let alive = nodes
                .as_array()
                .map(|a| a.iter().filter(|n| n["alive"] == true).count())
                .unwrap_or_default();
            if alive == 2 {
                Ok(())
            } else {
                Err(format!("{nodes}"))
            }
        },
    )
    .await;

    // A change on the gRPC node reaches the legacy one, and back.
    nodes[0].api().exec("CREATE DATABASE over_grpc").await;
    nodes[1].api().exec("CREATE DATABASE over_https").await;
    for node in &nodes {
        eventually(
            Duration::from_secs(30),
            "both databases on every node",
            || async {
                let dbs = node.api().databases().await;
                if dbs.contains("over_grpc") && dbs.contains("over_https") {
                    Ok(())
                } else {
                    Err(format!("{} has {dbs:?}", node.name))
                }
            },
        )
        .await;
    }
}
