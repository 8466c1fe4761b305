//! The Debian package: `cargo deb --no-build` packs the release binaries this
//! test was built with, `dpkg -x` unpacks it into a scratch root, and the
//! installed manager, units and configs are checked there.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::process::free_port;
use support::wait_until;

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn the_debian_package_installs_binaries_units_and_configs() {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let has_cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(has_cargo_deb, "cargo-deb is missing: run scripts/setup.sh");
    let built = run(Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--no-build", "--no-strip", "--fast", "--output"])
        .arg(scratch.path()));
    let deb = Path::new(
        built
            .trim()
            .lines()
            .last()
            .expect("cargo deb names the package"),
    );
    assert!(deb.is_file(), "no package at {}", deb.display());

    let root = scratch.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(deb).arg(&root));

    let version = run(Command::new(root.join("usr/bin/cflux-manager")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("cflux-manager {}", env!("CARGO_PKG_VERSION"))
    );
    for binary in ["cflux-agent", "cfluxctl"] {
        run(Command::new(root.join("usr/bin").join(binary)).arg("--version"));
    }

    for (unit, config) in [("cflux-manager", "manager"), ("cflux-agent", "agent")] {
        let text = read(&root.join(format!("lib/systemd/system/{unit}.service")));
        assert!(
            text.contains(&format!(
                "ExecStart=/usr/bin/{unit} --config /etc/cflux/{config}.toml"
            )),
            "{text}"
        );
        assert!(text.contains("\nUser="), "{text}");
        assert!(text.contains("\nNoNewPrivileges=yes"), "{text}");
        let example = read(&root.join(format!("etc/cflux/{config}.toml")));
        // Every key commented: the example changes no default.
        assert!(
            example
                .lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#')),
            "{example}"
        );
    }
    let conffiles = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert!(conffiles.contains("/etc/cflux/manager.toml"), "{conffiles}");
    assert!(conffiles.contains("/etc/cflux/agent.toml"), "{conffiles}");

    // The installed manager starts on its example config (every default).
    let listen = format!("127.0.0.1:{}", free_port());
    let mut manager = Command::new(root.join("usr/bin/cflux-manager"))
        .args(["--config"])
        .arg(root.join("etc/cflux/manager.toml"))
        .args(["--listen", &listen, "--data-dir"])
        .arg(scratch.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the installed manager");
    wait_until(
        Duration::from_secs(10),
        "the installed manager listening",
        || async { std::net::TcpStream::connect(&listen).is_ok() },
    )
    .await;
    let _ = manager.kill();
    let _ = manager.wait();
}
