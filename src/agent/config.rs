//! The agent's configuration: flags, environment variables and a TOML file
//! (`--config`), in that order of precedence, over built-in defaults. TOML
//! keys are the flag names (`cflux-endpoint = "http://m1:8000,http://m2:8000"`).
//!
//! The node settings (`CFLUX_ENDPOINT`, `CLUSTER`, `CFLUX_TOKEN`,
//! `CFLUX_TRANSPORT`) keep the names the original Clusterflux node read;
//! `CFLUX_TOKEN_FILE` and `CFLUX_CA` are ours.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

use crate::client::manager::{ManagerSettings, TransportKind};
use crate::client::retry::RetrySettings;

/// Command line and TOML file; every setting optional so sources can be layered.
#[derive(Parser, Debug, Default, Deserialize)]
#[command(
    name = "cflux-agent",
    version,
    about = "Makes a stock InfluxDB 1.x server a Clusterflux node: registers it, heartbeats, and keeps its databases, retention policies, continuous queries, subscriptions and users in sync with its cluster."
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentArgs {
    /// TOML file with any of the settings below (keys are the flag names); flags and environment variables override it.
    #[arg(long, env = "CFLUX_AGENT_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// How to write logs to stderr: text (coloured only on a terminal) or json (one object a line, for log shippers).
    #[arg(
        long,
        env = "CFLUX_AGENT_LOG_FORMAT",
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    #[serde(skip)]
    pub log_format: crate::telemetry::LogFormat,

    /// Manager URL; a comma-separated list fails over between managers [default: http://localhost:8000].
    #[arg(long, env = "CFLUX_ENDPOINT", value_name = "URLS")]
    pub cflux_endpoint: Option<String>,

    /// The cluster this node belongs to [default: default].
    #[arg(long, env = "CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,

    /// Bearer token for the managers (prefer --cflux-token-file: flags show in `ps`).
    #[arg(
        long,
        env = "CFLUX_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub cflux_token: Option<String>,

    /// File holding the managers' bearer token (its trailing newline is ignored).
    #[arg(long, env = "CFLUX_TOKEN_FILE", value_name = "FILE")]
    pub cflux_token_file: Option<PathBuf>,

    /// PEM file of the CA that https:// managers' certificates are checked against [default: the system's roots].
    #[arg(long, env = "CFLUX_CA", value_name = "FILE")]
    pub cflux_ca: Option<PathBuf>,

    /// Protocol to the managers: grpc, http (legacy managers) or auto (gRPC, falling back to http) [default: grpc].
    #[arg(long, env = "CFLUX_TRANSPORT", value_enum, value_name = "KIND")]
    pub cflux_transport: Option<TransportKind>,

    /// The InfluxDB server's HTTP API [default: http://127.0.0.1:8086].
    #[arg(long, env = "CFLUX_INFLUXDB_URL", value_name = "URL")]
    pub influxdb_url: Option<String>,

    /// The InfluxDB server's meta directory, holding meta.db (as influxd reads INFLUXDB_META_DIR) [default: /var/lib/influxdb/meta].
    #[arg(long, env = "INFLUXDB_META_DIR", value_name = "DIR")]
    pub meta_dir: Option<PathBuf>,

    /// The agent's own state: node ID, synced base [default: /var/lib/cflux-agent].
    #[arg(long, env = "CFLUX_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// influxd's [http] shared-secret, to act on an auth-enabled server with a JWT.
    #[arg(long, env = "INFLUXDB_HTTP_SHARED_SECRET", value_name = "SECRET")]
    pub shared_secret: Option<String>,

    /// Admin user for an auth-enabled server (instead of --shared-secret).
    #[arg(
        long,
        env = "CFLUX_INFLUXDB_USERNAME",
        value_name = "USER",
        requires = "password"
    )]
    pub username: Option<String>,

    /// Password of --username.
    #[arg(
        long,
        env = "CFLUX_INFLUXDB_PASSWORD",
        value_name = "PASSWORD",
        requires = "username"
    )]
    pub password: Option<String>,

    /// The InfluxDB address reported to the manager [default: the host of --influxdb-url with its port].
    #[arg(long, env = "CFLUX_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,

    /// Host name reported to the manager [default: this machine's].
    #[arg(long, env = "CFLUX_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Where the agent serves /health and /metrics [default: 127.0.0.1:8099].
    #[arg(long, env = "CFLUX_AGENT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// How often meta.db is re-read even without a file event [default: 2s].
    #[arg(long, env = "CFLUX_RESYNC_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub resync_interval: Option<Duration>,

    /// Serve InfluxDB's HTTP API here as the node's front door (e.g. 0.0.0.0:8086), forwarding to --influxdb-url (bind influxd to 127.0.0.1 with auth-enabled); passwords are checked against the cluster's users and influxd gets a short-lived JWT signed with --shared-secret [default: off].
    #[arg(long, env = "CFLUX_FRONTDOOR_LISTEN", value_name = "ADDR")]
    pub frontdoor_listen: Option<SocketAddr>,

    /// PEM certificate chain: the front door speaks HTTPS (with --frontdoor-tls-key).
    #[arg(
        long,
        env = "CFLUX_FRONTDOOR_TLS_CERT",
        value_name = "FILE",
        requires = "frontdoor_tls_key"
    )]
    pub frontdoor_tls_cert: Option<PathBuf>,

    /// PEM private key of --frontdoor-tls-cert.
    #[arg(
        long,
        env = "CFLUX_FRONTDOOR_TLS_KEY",
        value_name = "FILE",
        requires = "frontdoor_tls_cert"
    )]
    pub frontdoor_tls_key: Option<PathBuf>,
}

/// The node's front door (see [`crate::agent::frontdoor`]).
#[derive(Clone, Debug)]
pub struct FrontDoorConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// How the agent reaches its influxd.
#[derive(Clone, Debug)]
pub enum InfluxAuth {
    None,
    /// Signs short-lived JWTs with influxd's shared secret (acting as `user`).
    SharedSecret {
        secret: String,
        user: Option<String>,
    },
    Basic {
        username: String,
        password: String,
    },
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manager: ManagerSettings,
    pub cluster: String,
    pub influxdb_url: String,
    pub meta_dir: PathBuf,
    pub state_dir: PathBuf,
    pub auth: InfluxAuth,
    pub http_addr: String,
    pub hostname: String,
    pub listen: SocketAddr,
    pub resync_interval: Duration,
    /// Off unless `--frontdoor-listen` is set.
    pub frontdoor: Option<FrontDoorConfig>,
}

impl AgentArgs {
    /// Flags and environment over the `--config` file over defaults.
    pub fn resolve(self) -> anyhow::Result<AgentConfig> {
        let f: AgentArgs = crate::config_file::read(self.config.as_deref())?;
        let a = self;
        let endpoints: Vec<String> = a
            .cflux_endpoint
            .or(f.cflux_endpoint)
            .unwrap_or_else(|| "http://localhost:8000".into())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            bail!("CFLUX_ENDPOINT names no manager");
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("manager endpoint {e:?} must start with http:// or https://");
            }
        }
        let token = crate::config_file::token(
            a.cflux_token.or(f.cflux_token),
            a.cflux_token_file.or(f.cflux_token_file).as_deref(),
            "--cflux-token",
            "--cflux-token-file",
        )?;
        let cluster = a.cluster.or(f.cluster).unwrap_or_else(|| "default".into());
        crate::names::validate_cluster(&cluster).map_err(|e| anyhow::anyhow!("CLUSTER: {e}"))?;
        let influxdb_url = a
            .influxdb_url
            .or(f.influxdb_url)
            .unwrap_or_else(|| "http://127.0.0.1:8086".into())
            .trim_end_matches('/')
            .to_owned();
        let authority = influxdb_url
            .strip_prefix("http://")
            .with_context(|| format!("--influxdb-url {influxdb_url:?} must start with http://"))?
            .to_owned();
        let auth = match (
            a.shared_secret.or(f.shared_secret),
            a.username.or(f.username),
            a.password.or(f.password),
        ) {
            (Some(secret), user, _) if !secret.is_empty() => {
                InfluxAuth::SharedSecret { secret, user }
            }
            (_, Some(username), Some(password)) => InfluxAuth::Basic { username, password },
            (_, Some(_), None) | (_, None, Some(_)) => {
                bail!("--username and --password go together")
            }
            _ => InfluxAuth::None,
        };
        let frontdoor_tls = match (
            a.frontdoor_tls_cert.or(f.frontdoor_tls_cert),
            a.frontdoor_tls_key.or(f.frontdoor_tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("--frontdoor-tls-cert and --frontdoor-tls-key go together"),
        };
        let frontdoor = match a.frontdoor_listen.or(f.frontdoor_listen) {
            Some(listen) => {
                if authority.parse::<SocketAddr>().ok() == Some(listen) {
                    bail!("--frontdoor-listen {listen} is --influxdb-url itself: bind influxd to another (private) address");
                }
                Some(FrontDoorConfig {
                    listen,
                    tls: frontdoor_tls,
                })
            }
            None if frontdoor_tls.is_some() => {
                bail!("--frontdoor-tls-cert needs --frontdoor-listen")
            }
            None => None,
        };
        let hostname = match a.hostname.or(f.hostname) {
            Some(h) => h,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into()),
        };
        Ok(AgentConfig {
            manager: ManagerSettings {
                endpoints,
                transport: a
                    .cflux_transport
                    .or(f.cflux_transport)
                    .unwrap_or(TransportKind::Grpc),
                token,
                ca_file: a.cflux_ca.or(f.cflux_ca),
                timeout: Duration::from_secs(5),
                retry: RetrySettings::default(),
            },
            cluster,
            http_addr: a.http_addr.or(f.http_addr).unwrap_or(authority),
            influxdb_url,
            meta_dir: a
                .meta_dir
                .or(f.meta_dir)
                .unwrap_or_else(|| "/var/lib/influxdb/meta".into()),
            state_dir: a
                .state_dir
                .or(f.state_dir)
                .unwrap_or_else(|| "/var/lib/cflux-agent".into()),
            auth,
            hostname,
            listen: a
                .listen
                .or(f.listen)
                .unwrap_or(([127, 0, 0, 1], 8099).into()),
            resync_interval: a
                .resync_interval
                .or(f.resync_interval)
                .unwrap_or(Duration::from_secs(2)),
            frontdoor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<AgentConfig> {
        let mut v = vec!["cflux-agent"];
        v.extend_from_slice(args);
        AgentArgs::try_parse_from(v)?.resolve()
    }

    #[test]
    fn defaults_and_lists() {
        let c = parse(&[
            "--cflux-endpoint",
            "http://a:8000, http://b:8000",
            "--cluster",
            "prod",
        ])
        .unwrap();
        assert_eq!(c.manager.endpoints, vec!["http://a:8000", "http://b:8000"]);
        assert_eq!(c.cluster, "prod");
        assert_eq!(c.http_addr, "127.0.0.1:8086");
        assert_eq!(c.manager.transport, TransportKind::Grpc);
        assert_eq!(c.manager.retry.attempts, 5);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "cluster = \"from-file\"\ncflux-transport = \"http\"\nresync-interval = \"9s\"\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--cluster", "from-flag"]).unwrap();
        assert_eq!(c.cluster, "from-flag");
        assert_eq!(c.manager.transport, TransportKind::Http);
        assert_eq!(c.resync_interval, Duration::from_secs(9));
    }

    #[test]
    fn the_front_door_is_off_unless_asked_for() {
        assert!(parse(&[]).unwrap().frontdoor.is_none());
        let c = parse(&[
            "--influxdb-url",
            "http://127.0.0.1:18086",
            "--frontdoor-listen",
            "0.0.0.0:8086",
        ])
        .unwrap();
        let fd = c.frontdoor.unwrap();
        assert_eq!(fd.listen, "0.0.0.0:8086".parse().unwrap());
        assert!(fd.tls.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "frontdoor-listen = \"127.0.0.1:9086\"\nfrontdoor-tls-cert = \"/c.pem\"\nfrontdoor-tls-key = \"/k.pem\"\n",
        )
        .unwrap();
        let fd = parse(&["--config", path.to_str().unwrap()])
            .unwrap()
            .frontdoor
            .unwrap();
        assert_eq!(fd.listen, "127.0.0.1:9086".parse().unwrap());
        assert_eq!(fd.tls, Some(("/c.pem".into(), "/k.pem".into())));
        // Forwarding to itself, TLS without a listener, half a TLS pair.
        assert!(parse(&["--frontdoor-listen", "127.0.0.1:8086"]).is_err());
        assert!(parse(&["--frontdoor-tls-cert", "/c", "--frontdoor-tls-key", "/k"]).is_err());
        assert!(parse(&[
            "--frontdoor-listen",
            "0.0.0.0:8086",
            "--frontdoor-tls-cert",
            "/c"
        ])
        .is_err());
    }

    #[test]
    fn https_managers_a_ca_and_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let c = parse(&[
            "--cflux-endpoint",
            "https://a:8000,http://b:8000",
            "--cflux-ca",
            "/etc/cflux/ca.pem",
            "--cflux-token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(c.manager.endpoints, vec!["https://a:8000", "http://b:8000"]);
        assert_eq!(c.manager.ca_file, Some("/etc/cflux/ca.pem".into()));
        assert_eq!(c.manager.token.as_deref(), Some("s3cret"));
        // Both a token and a file, an empty file, a file that is not there.
        let file = token.to_str().unwrap();
        assert!(parse(&["--cflux-token", "x", "--cflux-token-file", file]).is_err());
        std::fs::write(&token, "\n").unwrap();
        assert!(parse(&["--cflux-token-file", file]).is_err());
        assert!(parse(&["--cflux-token-file", "/nonexistent/token"]).is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(parse(&["--cflux-endpoint", "localhost:8000"]).is_err());
        assert!(parse(&["--cluster", "a\u{1}b"]).is_err());
        assert!(parse(&["--influxdb-url", "https://x"]).is_err());
        assert!(parse(&["--cflux-transport", "carrier-pigeon"]).is_err());
    }
}
