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

use crate::agent::frontdoor::consistency::Consistency;
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

    /// Replicate every write taken at the front door to every node of the cluster, with durable hinted handoff (needs --frontdoor-listen and --replication-secret-file).
    #[arg(long, env = "CFLUX_REPLICATE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub replicate: Option<bool>,

    /// File holding the credential only the cluster's nodes share (the same file on every node); replication requests are signed with it.
    #[arg(long, env = "CFLUX_REPLICATION_SECRET_FILE", value_name = "FILE")]
    pub replication_secret_file: Option<PathBuf>,

    /// Largest hinted-handoff queue per peer, in bytes (suffixes KiB, MiB, GiB); writes that do not fit are dropped for that peer and counted [default: 10GiB].
    #[arg(long, env = "CFLUX_HH_MAX_SIZE", value_parser = parse_size, value_name = "BYTES")]
    #[serde(default, deserialize_with = "size_option")]
    pub hh_max_size: Option<u64>,

    /// Oldest write a peer's hinted-handoff queue keeps; older ones are dropped and counted [default: 168h].
    #[arg(long, env = "CFLUX_HH_MAX_AGE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub hh_max_age: Option<Duration>,

    /// How long this node answers "not yet" to a peer's write that its influxd refuses for a database, user or privilege it does not have (its catalog may be behind); past this since the write was queued, the write is refused for good and the peer drops and counts it [default: 60s].
    #[arg(long, env = "CFLUX_HH_MISSING_DATABASE_WAIT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub hh_missing_database_wait: Option<Duration>,

    /// With --replicate: the consistency a write or a statement that changes points gets when the client names none (any, one, quorum, all); `all` makes a write readable at every alive node once acknowledged, as a load balancer spreading one client over several front doors needs [default: one].
    #[arg(long, env = "CFLUX_DEFAULT_CONSISTENCY", value_parser = parse_consistency, value_name = "LEVEL")]
    #[serde(default, deserialize_with = "consistency_option")]
    pub default_consistency: Option<Consistency>,

    /// With --replicate: how long the answer to a statement that changes the catalog (CREATE, DROP, ALTER, GRANT, REVOKE, SET PASSWORD) waits until every alive node has applied it, so that the next request at any front door finds it in effect; past this the answer goes out anyway and the change reaches the slower nodes later. 0s answers at once [default: 10s].
    #[arg(long, env = "CFLUX_CATALOG_WAIT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub catalog_wait: Option<Duration>,

    /// With --replicate: how often the node compares its points with a peer's, to tell whether it needs catch-up [default: 10m].
    #[arg(long, env = "CFLUX_CATCH_UP_CHECK_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde::option")]
    pub catch_up_check_interval: Option<Duration>,

    /// With --replicate: a node that needs catch-up copies what it lacks from a peer by itself, as `cfluxctl catch-up` does.
    #[arg(long, env = "CFLUX_AUTO_CATCH_UP", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub auto_catch_up: Option<bool>,
}

/// Default `--catch-up-check-interval`.
pub const DEFAULT_CATCH_UP_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// Default `--hh-max-size`: InfluxDB Enterprise's hinted-handoff `max-size`.
pub const DEFAULT_HH_MAX_SIZE: u64 = 10 << 30;
/// Default `--hh-max-age`: Enterprise's `max-age`, 7 days.
pub const DEFAULT_HH_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `--catalog-wait`: a catalog change usually reaches every node
/// well under a second; a node that takes longer is not waited for.
pub const DEFAULT_CATALOG_WAIT: Duration = Duration::from_secs(10);
/// Default `--hh-missing-database-wait`: long enough for a catalog change to
/// reach every node, short enough that a dropped database does not stall a
/// queue.
pub const DEFAULT_HH_MISSING_DATABASE_WAIT: Duration = Duration::from_secs(60);

/// `1048576`, `512MiB`, `10GiB`, `1GB`: a size in bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 10GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("unknown size unit in {s:?} (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Consistency::parse(s).map_err(|e| e.to_string())
}

/// A TOML consistency level, as the flag takes it.
fn consistency_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Consistency>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_consistency(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A TOML size: a number of bytes or a string with a unit.
fn size_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(b)) => Ok(Some(b)),
        Some(Size::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Replicated writes (see [`crate::agent::frontdoor::replication`]).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// The members' credential, from `--replication-secret-file`.
    pub secret: Vec<u8>,
    pub max_size: u64,
    pub max_age: Duration,
    /// `--hh-missing-database-wait`.
    pub missing_database_wait: Duration,
    /// `--default-consistency`.
    pub default_consistency: Consistency,
    /// `--catalog-wait`.
    pub catalog_wait: Duration,
    /// `--catch-up-check-interval` and `--auto-catch-up`.
    pub catch_up_check_interval: Duration,
    pub auto_catch_up: bool,
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
    /// Off unless `--replicate`.
    pub replication: Option<ReplicationConfig>,
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
        let auto_catch_up = a.auto_catch_up.or(f.auto_catch_up).unwrap_or(false);
        let replication = match (
            a.replicate.or(f.replicate).unwrap_or(false),
            a.replication_secret_file.or(f.replication_secret_file),
        ) {
            (false, _) if auto_catch_up => bail!("--auto-catch-up needs --replicate"),
            (false, _) => None,
            (true, None) => bail!("--replicate needs --replication-secret-file"),
            (true, Some(file)) => {
                match &frontdoor {
                    None => bail!("--replicate needs --frontdoor-listen"),
                    Some(fd) if fd.tls.is_some() => {
                        bail!("--replicate does not work with --frontdoor-tls-cert yet: peers speak plain HTTP to each other")
                    }
                    Some(_) => {}
                }
                let secret = std::fs::read(&file).with_context(|| {
                    format!("cannot read --replication-secret-file {}", file.display())
                })?;
                let secret = secret.trim_ascii().to_vec();
                if secret.is_empty() {
                    bail!("--replication-secret-file {} is empty", file.display());
                }
                Some(ReplicationConfig {
                    secret,
                    max_size: a
                        .hh_max_size
                        .or(f.hh_max_size)
                        .unwrap_or(DEFAULT_HH_MAX_SIZE),
                    max_age: a.hh_max_age.or(f.hh_max_age).unwrap_or(DEFAULT_HH_MAX_AGE),
                    missing_database_wait: a
                        .hh_missing_database_wait
                        .or(f.hh_missing_database_wait)
                        .unwrap_or(DEFAULT_HH_MISSING_DATABASE_WAIT),
                    default_consistency: a
                        .default_consistency
                        .or(f.default_consistency)
                        .unwrap_or_default(),
                    catalog_wait: a
                        .catalog_wait
                        .or(f.catalog_wait)
                        .unwrap_or(DEFAULT_CATALOG_WAIT),
                    catch_up_check_interval: a
                        .catch_up_check_interval
                        .or(f.catch_up_check_interval)
                        .unwrap_or(DEFAULT_CATCH_UP_CHECK_INTERVAL),
                    auto_catch_up,
                })
            }
        };
        // With a front door, that is where other nodes (and their clients) reach this one.
        let http_addr = match (a.http_addr.or(f.http_addr), &frontdoor) {
            (Some(addr), _) => addr,
            (None, Some(fd)) if fd.listen.ip().is_unspecified() => {
                format!("{hostname}:{}", fd.listen.port())
            }
            (None, Some(fd)) => fd.listen.to_string(),
            (None, None) => authority,
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
            http_addr,
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
            replication,
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
    fn replication_needs_a_front_door_and_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("replication.secret");
        std::fs::write(&secret, "members-only\n").unwrap();
        let secret = secret.to_str().unwrap();
        let door = [
            "--influxdb-url",
            "http://127.0.0.1:18086",
            "--frontdoor-listen",
        ];
        let c = parse(
            &[
                &door[..],
                &[
                    "0.0.0.0:8086",
                    "--replicate",
                    "--replication-secret-file",
                    secret,
                    "--hostname",
                    "db1",
                ],
            ]
            .concat(),
        )
        .unwrap();
        let r = c.replication.unwrap();
        assert_eq!(r.secret, b"members-only");
        assert_eq!(
            (
                r.max_size,
                r.max_age,
                r.missing_database_wait,
                r.catalog_wait
            ),
            (
                DEFAULT_HH_MAX_SIZE,
                DEFAULT_HH_MAX_AGE,
                DEFAULT_HH_MISSING_DATABASE_WAIT,
                DEFAULT_CATALOG_WAIT
            )
        );
        // The front door is the node's address for the others.
        assert_eq!(c.http_addr, "db1:8086");
        let c = parse(
            &[
                &door[..],
                &[
                    "127.0.0.1:9086",
                    "--replicate=true",
                    "--replication-secret-file",
                    secret,
                    "--hh-max-size",
                    "512MiB",
                    "--hh-max-age",
                    "1h",
                    "--hh-missing-database-wait",
                    "2s",
                    "--catalog-wait",
                    "0s",
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:9086");
        let r = c.replication.unwrap();
        assert_eq!(
            (
                r.max_size,
                r.max_age,
                r.missing_database_wait,
                r.catalog_wait
            ),
            (
                512 << 20,
                Duration::from_secs(3600),
                Duration::from_secs(2),
                Duration::ZERO
            )
        );
        assert!(
            parse(&[&door[..], &["127.0.0.1:9086", "--replicate=false"]].concat())
                .unwrap()
                .replication
                .is_none()
        );
        // No secret, no front door, a bad size.
        assert!(parse(&[&door[..], &["127.0.0.1:9086", "--replicate"]].concat()).is_err());
        assert!(parse(&["--replicate", "--replication-secret-file", secret]).is_err());
        assert!(parse(
            &[
                &door[..],
                &[
                    "127.0.0.1:9086",
                    "--replicate",
                    "--replication-secret-file",
                    secret,
                    "--hh-max-size",
                    "lots"
                ]
            ]
            .concat()
        )
        .is_err());
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
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
