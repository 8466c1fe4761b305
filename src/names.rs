//! The naming rules both sides of the contract share: what a cluster name and
//! a node ID may be, and how large the other fields a node registers with may
//! grow. The manager refuses what breaks them; the agent and `cfluxctl` check
//! their own settings against the same rules before they ever reach a
//! manager. Every field is bounded so that one node cannot make a listing
//! too large for the clients of every other (gRPC clients refuse answers
//! over 4 MiB by default), and no error message repeats unbounded input.

/// The longest cluster name or node ID, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// The longest host name: DNS's limit.
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// At most this many IP addresses per node.
pub const MAX_IPS: usize = 64;
/// The longest IP address as text (IPv6 with a zone fits).
pub const MAX_IP_BYTES: usize = 64;
/// The longest HTTP address (`host:port`, or a URL).
pub const MAX_ADDR_BYTES: usize = 512;
/// The longest software version string.
pub const MAX_VERSION_BYTES: usize = 256;
/// The longest reason a node gives for a failed sync step.
pub const MAX_SYNC_ERROR_BYTES: usize = 512;

/// Why a name breaks the rules; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{what} is {len} bytes long; the limit is {limit}")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{what} lists {count} entries; the limit is {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{0} contains control characters")]
    ControlCharacters(&'static str),
    #[error("{0} must not contain '/'")]
    Slash(&'static str),
}

/// Checks a cluster name: 1–128 bytes of UTF-8 without control characters.
pub fn validate_cluster(name: &str) -> Result<(), NameError> {
    validate_name("cluster name", name)
}

/// Checks a node ID handed in by a client (same rules as cluster names, and no '/').
pub fn validate_node_id(id: &str) -> Result<(), NameError> {
    validate_name("node_id", id)?;
    if id.contains('/') {
        return Err(NameError::Slash("node_id"));
    }
    Ok(())
}

/// What a node says about itself when it registers, besides its ID.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationFields<'a> {
    pub hostname: &'a str,
    pub ips: &'a [String],
    pub http_addr: &'a str,
    pub version: &'a str,
}

/// Checks the registration fields against their limits: a host name of
/// 1–253 bytes without control characters, at most 64 IPs of 64 bytes, an
/// HTTP address of 512 bytes and a version string of 256.
pub fn validate_registration(r: RegistrationFields<'_>) -> Result<(), NameError> {
    if r.hostname.trim().is_empty() {
        return Err(NameError::Empty("hostname"));
    }
    bounded("hostname", r.hostname, MAX_HOSTNAME_BYTES)?;
    if r.ips.len() > MAX_IPS {
        return Err(NameError::TooMany {
            what: "ips",
            count: r.ips.len(),
            limit: MAX_IPS,
        });
    }
    for ip in r.ips {
        bounded("an IP address", ip, MAX_IP_BYTES)?;
    }
    bounded("http_addr", r.http_addr, MAX_ADDR_BYTES)?;
    bounded("version", r.version, MAX_VERSION_BYTES)
}

/// Checks what a heartbeat reports about the node's sync: a history ID as
/// long as a name, a reason of at most 512 bytes (the node cuts its own with
/// [`sync_error_line`]); neither with control characters.
pub fn validate_sync_report(history_id: &str, sync_error: &str) -> Result<(), NameError> {
    bounded("applied_history_id", history_id, MAX_NAME_BYTES)?;
    bounded("sync_error", sync_error, MAX_SYNC_ERROR_BYTES)
}

/// The catch-up reason of a heartbeat: at most as long as a sync error.
pub fn validate_catch_up(reason: &str) -> Result<(), NameError> {
    bounded("catch_up", reason, MAX_SYNC_ERROR_BYTES)
}

/// A sync error as a node reports it: one line (control characters become
/// spaces) of at most [`MAX_SYNC_ERROR_BYTES`], cut at a character boundary
/// and marked with `…` when cut.
pub fn sync_error_line(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= MAX_SYNC_ERROR_BYTES {
        return line;
    }
    const MARK: &str = "…";
    let mut cut = MAX_SYNC_ERROR_BYTES - MARK.len();
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MARK}", &line[..cut])
}

fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(what));
    }
    bounded(what, name, MAX_NAME_BYTES)
}

/// At most `limit` bytes and no control characters.
fn bounded(what: &'static str, value: &str, limit: usize) -> Result<(), NameError> {
    if value.len() > limit {
        return Err(NameError::TooLong {
            what,
            len: value.len(),
            limit,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_errors_are_one_bounded_line() {
        assert_eq!(
            sync_error_line("apply: refused\nby influxd"),
            "apply: refused by influxd"
        );
        // Multi-byte characters across the limit: cut before them, never inside.
        let long = "é".repeat(MAX_SYNC_ERROR_BYTES);
        let line = sync_error_line(&long);
        assert!(line.len() <= MAX_SYNC_ERROR_BYTES, "{}", line.len());
        assert!(line.ends_with('…') && line.starts_with("éé"));
        assert_eq!(validate_sync_report("h", &line), Ok(()));
        let exact = "x".repeat(MAX_SYNC_ERROR_BYTES);
        assert_eq!(sync_error_line(&exact), exact);

        assert!(matches!(
            validate_sync_report("h", &format!("{exact}x")),
            Err(NameError::TooLong {
                what: "sync_error",
                len: 513,
                limit: 512
            })
        ));
        assert!(validate_sync_report("h", "a\nb").is_err());
        assert!(validate_sync_report(&"h".repeat(MAX_NAME_BYTES + 1), "").is_err());
        assert_eq!(validate_sync_report("", ""), Ok(()));
    }

    #[test]
    fn cluster_names() {
        assert!(validate_cluster("prod").is_ok());
        assert!(validate_cluster("é/x").is_ok());
        assert_eq!(validate_cluster(""), Err(NameError::Empty("cluster name")));
        assert!(matches!(
            validate_cluster(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(NameError::TooLong { len: 129, .. })
        ));
        assert!(validate_cluster(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert_eq!(
            validate_cluster("a\nb"),
            Err(NameError::ControlCharacters("cluster name"))
        );
    }

    #[test]
    fn registration_fields_are_bounded() {
        let ips = vec!["10.0.0.1".to_owned(), "fe80::1%eth0".to_owned()];
        let ok = RegistrationFields {
            hostname: "influx-1.example.com",
            ips: &ips,
            http_addr: "10.0.0.1:8086",
            version: "cflux-agent=0.1.0",
        };
        assert_eq!(validate_registration(ok), Ok(()));
        let long_host = "h".repeat(MAX_HOSTNAME_BYTES + 1);
        let err = validate_registration(RegistrationFields {
            hostname: &long_host,
            ..ok
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hostname is 254 bytes long; the limit is 253"
        );
        assert_eq!(
            validate_registration(RegistrationFields {
                hostname: " ",
                ..ok
            }),
            Err(NameError::Empty("hostname"))
        );
        let many = vec!["10.0.0.1".to_owned(); MAX_IPS + 1];
        assert!(matches!(
            validate_registration(RegistrationFields { ips: &many, ..ok }),
            Err(NameError::TooMany { count: 65, .. })
        ));
        let long_ip = vec!["1".repeat(MAX_IP_BYTES + 1)];
        assert!(validate_registration(RegistrationFields {
            ips: &long_ip,
            ..ok
        })
        .is_err());
        let long_addr = "a".repeat(MAX_ADDR_BYTES + 1);
        assert!(validate_registration(RegistrationFields {
            http_addr: &long_addr,
            ..ok
        })
        .is_err());
        let long_version = "v".repeat(MAX_VERSION_BYTES + 1);
        assert!(validate_registration(RegistrationFields {
            version: &long_version,
            ..ok
        })
        .is_err());
        assert_eq!(
            validate_registration(RegistrationFields {
                hostname: "a\u{1b}[31m",
                ..ok
            }),
            Err(NameError::ControlCharacters("hostname"))
        );
    }

    #[test]
    fn node_ids() {
        assert!(validate_node_id("3f2a").is_ok());
        assert_eq!(validate_node_id("a/b"), Err(NameError::Slash("node_id")));
        assert_eq!(validate_node_id(""), Err(NameError::Empty("node_id")));
    }
}
