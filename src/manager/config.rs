//! The manager's configuration: flags, `CFLUX_MANAGER_*` environment
//! variables and a TOML file (`--config`), in that order of precedence, over
//! built-in defaults. TOML keys are the flag names (`data-dir = "/var/lib/cflux"`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::config_file::ConfigError;
use crate::manager::store::{HistoryLimits, DEFAULT_ETCD_COMPACTION_INTERVAL};

/// Command line and TOML file, every setting optional so sources can be layered.
#[derive(Parser, Debug, Default, Deserialize)]
#[command(
    name = "cflux-manager",
    version,
    about = "The Clusterflux manager: membership, liveness and catalog sync for InfluxDB 1.x nodes over gRPC and the legacy HTTP protocol, on one port."
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagerArgs {
    /// TOML file with any of the settings below (keys are the flag names); flags and environment variables override it.
    #[arg(long, env = "CFLUX_MANAGER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// How to write logs to stderr: text (coloured only on a terminal) or json (one object a line, for log shippers).
    #[arg(
        long,
        env = "CFLUX_MANAGER_LOG_FORMAT",
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    #[serde(skip)]
    pub log_format: crate::telemetry::LogFormat,

    /// Address to serve gRPC, the legacy HTTP protocol and /metrics on [default: 127.0.0.1:8000].
    #[arg(long, env = "CFLUX_MANAGER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Address other managers and nodes know this manager by, listed by `GET /nodes` [default: the listen address].
    #[arg(long, env = "CFLUX_MANAGER_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,

    /// Directory of the embedded store, used when no etcd endpoints are given [default: ./cflux-data].
    #[arg(long, env = "CFLUX_MANAGER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Comma-separated etcd endpoints (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379): keep all state in etcd, so several managers can serve it.
    #[arg(
        long,
        env = "CFLUX_MANAGER_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub etcd_endpoints: Option<Vec<String>>,

    /// How often to compact etcd's revisions (to the revision seen one interval earlier), so heartbeats and pushes do not grow etcd's database to its quota; 0s: never (when something else compacts) [default: 5m].
    #[arg(long, env = "CFLUX_MANAGER_ETCD_COMPACTION_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub etcd_compaction_interval: Option<Duration>,

    /// How long a node stays alive without a heartbeat [default: 15s].
    #[arg(long, env = "CFLUX_MANAGER_NODE_TTL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub node_ttl: Option<Duration>,

    /// Heartbeat interval handed to nodes; must be below the TTL [default: 5s].
    #[arg(long, env = "CFLUX_MANAGER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub heartbeat_interval: Option<Duration>,

    /// Largest catalog (and gRPC message) accepted, in bytes; K, M, G (or KiB, MiB, GiB) suffixes allowed [default: 16MiB].
    #[arg(long, env = "CFLUX_MANAGER_MAX_MESSAGE_SIZE", value_parser = parse_size, value_name = "BYTES")]
    #[serde(default, deserialize_with = "deserialize_size")]
    pub max_message_size: Option<usize>,

    /// Bearer token every RPC and legacy call must carry (prefer --token-file: flags show in `ps`).
    #[arg(
        long,
        env = "CFLUX_MANAGER_TOKEN",
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, env = "CFLUX_MANAGER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(
        long,
        env = "CFLUX_MANAGER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "CFLUX_MANAGER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// How long a legacy long poll (GET /clusters/{c}/versions/{v}) is held [default: 5m].
    #[arg(long, env = "CFLUX_MANAGER_LEGACY_POLL_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub legacy_poll_timeout: Option<Duration>,

    /// Status a long poll answers when nothing changed: 504 (the original) or 204 [default: 504].
    #[arg(long, env = "CFLUX_MANAGER_LEGACY_TIMEOUT_STATUS", value_name = "CODE")]
    pub legacy_timeout_status: Option<u16>,

    /// How many versions of each cluster's catalog to keep in the history [default: 100].
    #[arg(long, env = "CFLUX_MANAGER_HISTORY", value_name = "VERSIONS")]
    pub history: Option<usize>,

    /// Most catalog bytes the history keeps per cluster (the current version is always kept); K, M, G suffixes allowed [default: 64MiB].
    #[arg(long, env = "CFLUX_MANAGER_HISTORY_MAX_BYTES", value_parser = parse_size, value_name = "BYTES")]
    #[serde(default, deserialize_with = "deserialize_size")]
    pub history_max_bytes: Option<usize>,

    /// How long shutdown waits for in-flight requests [default: 10s].
    #[arg(long, env = "CFLUX_MANAGER_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_grace: Option<Duration>,
}

/// Where the manager keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    Embedded {
        data_dir: PathBuf,
    },
    Etcd {
        endpoints: Vec<String>,
        compaction_interval: Duration,
    },
}

/// The resolved configuration, every default applied and every value checked.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub listen: SocketAddr,
    pub advertise: String,
    pub store: StoreConfig,
    pub node_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub max_message_size: usize,
    pub token: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub legacy_poll_timeout: Duration,
    pub legacy_timeout_status: http::StatusCode,
    pub shutdown_grace: Duration,
    pub history: HistoryLimits,
}

impl ManagerArgs {
    /// Flags and environment over the `--config` file over defaults.
    pub fn resolve(self) -> Result<ManagerConfig, ConfigError> {
        let file: ManagerArgs = crate::config_file::read(self.config.as_deref())?;
        let a = self;
        let listen = a
            .listen
            .or(file.listen)
            .unwrap_or(([127, 0, 0, 1], 8000).into());
        let store = match a.etcd_endpoints.or(file.etcd_endpoints) {
            Some(endpoints) if !endpoints.is_empty() => StoreConfig::Etcd {
                endpoints,
                compaction_interval: a
                    .etcd_compaction_interval
                    .or(file.etcd_compaction_interval)
                    .unwrap_or(DEFAULT_ETCD_COMPACTION_INTERVAL),
            },
            _ => StoreConfig::Embedded {
                data_dir: a
                    .data_dir
                    .or(file.data_dir)
                    .unwrap_or_else(|| "cflux-data".into()),
            },
        };
        let node_ttl = a
            .node_ttl
            .or(file.node_ttl)
            .unwrap_or(Duration::from_secs(15));
        let heartbeat_interval = a
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(Duration::from_secs(5));
        if heartbeat_interval.is_zero() || heartbeat_interval >= node_ttl {
            return Err(ConfigError::invalid(format!("--heartbeat-interval ({heartbeat_interval:?}) must be above zero and below --node-ttl ({node_ttl:?})")));
        }
        let token = crate::config_file::token(
            a.token.or(file.token),
            a.token_file.or(file.token_file).as_deref(),
            "--token",
            "--token-file",
        )?;
        let tls = match (a.tls_cert.or(file.tls_cert), a.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::invalid("--tls-cert and --tls-key go together")),
        };
        let legacy_timeout_status = a
            .legacy_timeout_status
            .or(file.legacy_timeout_status)
            .unwrap_or(504);
        let legacy_timeout_status = match legacy_timeout_status {
            504 => http::StatusCode::GATEWAY_TIMEOUT,
            204 => http::StatusCode::NO_CONTENT,
            other => {
                return Err(ConfigError::invalid(format!(
                    "--legacy-timeout-status must be 504 or 204, not {other}"
                )))
            }
        };
        let max_message_size = a
            .max_message_size
            .or(file.max_message_size)
            .unwrap_or(16 << 20);
        if max_message_size == 0 {
            return Err(ConfigError::invalid(
                "--max-message-size must be above zero",
            ));
        }
        let defaults = HistoryLimits::default();
        let history = HistoryLimits {
            max_versions: a.history.or(file.history).unwrap_or(defaults.max_versions),
            max_bytes: a
                .history_max_bytes
                .or(file.history_max_bytes)
                .map_or(defaults.max_bytes, |b| b as u64),
        };
        if history.max_versions == 0 {
            return Err(ConfigError::invalid(
                "--history must be at least 1 (the current version)",
            ));
        }
        Ok(ManagerConfig {
            listen,
            advertise: a
                .advertise
                .or(file.advertise)
                .unwrap_or_else(|| listen.to_string()),
            store,
            node_ttl,
            heartbeat_interval,
            max_message_size,
            token,
            tls,
            legacy_poll_timeout: a
                .legacy_poll_timeout
                .or(file.legacy_poll_timeout)
                .unwrap_or(Duration::from_secs(300)),
            legacy_timeout_status,
            shutdown_grace: a
                .shutdown_grace
                .or(file.shutdown_grace)
                .unwrap_or(Duration::from_secs(10)),
            history,
        })
    }
}

/// Parses "16777216", "16M", "16MiB", "512k" into bytes (K/M/G are binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 16MiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(usize),
        Text(String),
    }
    Ok(match Option::<Size>::deserialize(d)? {
        None => None,
        Some(Size::Bytes(n)) => Some(n),
        Some(Size::Text(s)) => Some(parse_size(&s).map_err(serde::de::Error::custom)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn flags_override_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nnode-ttl = \"30s\"\nmax-message-size = \"1MiB\"\n",
        )
        .unwrap();
        let args = ManagerArgs::parse_from([
            "cflux-manager",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9100",
        ]);
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.node_ttl, Duration::from_secs(30));
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.legacy_timeout_status, http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(c.history, HistoryLimits::default());
    }

    #[test]
    fn history_limits_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "history = 7\nhistory-max-bytes = \"1MiB\"\n").unwrap();
        let c = ManagerArgs::parse_from(["cflux-manager", "--config", path.to_str().unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(
            c.history,
            HistoryLimits {
                max_versions: 7,
                max_bytes: 1 << 20
            }
        );
        let c = ManagerArgs::parse_from(["cflux-manager", "--history", "3"])
            .resolve()
            .unwrap();
        assert_eq!(c.history.max_versions, 3);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |args: &[&str]| {
            let mut v = vec!["cflux-manager"];
            v.extend_from_slice(args);
            ManagerArgs::parse_from(v).resolve().is_err()
        };
        assert!(bad(&["--heartbeat-interval", "20s"]));
        assert!(bad(&["--legacy-timeout-status", "500"]));
        assert!(bad(&["--token-file", "/nonexistent/token"]));
        assert!(bad(&["--max-message-size", "0"]));
        assert!(bad(&["--history", "0"]));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let args = ManagerArgs::parse_from(["cflux-manager", "--config", path.to_str().unwrap()]);
        assert!(args.resolve().is_err());
    }
}
