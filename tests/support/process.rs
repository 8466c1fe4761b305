//! What every process the tests start needs: free loopback ports, a clean
//! environment, the tail of its log when a test fails, being killed when
//! dropped, and its CPU and memory use.
//!
//! Self-contained (only `std`), so `etcd.rs`, which is also included on its
//! own, can include it too.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;

/// `n` distinct free 127.0.0.1 ports (all bound at once while choosing, so
/// they differ, then released), none handed out before in this process: a
/// port chosen for a process not started yet is free again until it starts,
/// and the kernel may offer it to the next caller.
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut probes = Vec::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let port = probe.local_addr().expect("probe port address").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        probes.push(probe);
    }
    ports
}

/// A free 127.0.0.1 port (bound, then released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`
/// (from `/proc`). Something answering on the port is not enough: another
/// process may have bound it between choosing and starting.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    // Columns: sl, local address, remote address, state (0A: LISTEN), ..., inode.
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| sockets.iter().any(|s| target.to_str() == Some(s)))
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[… {skip} earlier lines]\n"));
    }
    for l in &lines[skip..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Whether to print the logs of dropped processes: when the test failed, or
/// always with `CFLUX_TEST_LOGS=1`.
pub fn show_logs() -> bool {
    std::thread::panicking() || std::env::var_os("CFLUX_TEST_LOGS").is_some_and(|v| v == "1")
}

/// The environment of a child, without anything from ours that would
/// configure influxd, the agent or the manager behind the test's back.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("INFLUXDB_")
            || key.starts_with("CFLUX_")
            || key == "CLUSTER"
            || key == "RUST_LOG"
        {
            cmd.env_remove(key);
        }
    }
}

/// Kills a child (SIGKILL) and reaps it.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The exit status of a child that has exited.
pub fn exited(child: &mut Option<Child>) -> Option<ExitStatus> {
    child.as_mut().and_then(|c| c.try_wait().ok().flatten())
}

/// CPU time and resident memory of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessUsage {
    /// User and system CPU time so far.
    pub cpu_seconds: f64,
    /// Resident set size (`VmRSS`).
    pub rss_bytes: u64,
}

/// [`ProcessUsage`] of a running process, from `/proc` (Linux); `None`
/// when it is gone.
pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: the first is field 3 (state), utime is 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    // USER_HZ, the unit of utime and stime, is 100 on Linux.
    let cpu_seconds = (ticks(14)? + ticks(15)?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcessUsage {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
    })
}
