//! The JSON shapes of the original (2016) Clusterflux HTTP protocol, written
//! once: the manager's legacy layer serves them and the node's legacy
//! transport reads them, so the two sides cannot drift apart. Fields an
//! original peer may omit default to empty when read.

use serde::{Deserialize, Serialize};

/// `POST /nodes/{cluster}`: a node registering.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Comma-separated (and comma-terminated) IPv4 addresses: see [`join_ips`].
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub hostname: String,
    /// Our extension: the ID the node had before, so a restarted node stays
    /// one node (an original manager ignores it; an original node omits it).
    #[serde(default)]
    pub id: String,
}

/// The answer to a registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    #[serde(default)]
    pub status: String,
    pub id: String,
    /// When the node is listed dead without a heartbeat (RFC 3339).
    #[serde(default, rename = "expirationDate")]
    pub expiration_date: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub metadata: RegisteredMetadata,
}

/// What the manager recorded of a registering node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredMetadata {
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub hostname: String,
}

/// A node as `GET /nodes` and `GET /nodes/{cluster}` list it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default, rename = "bind-address")]
    pub bind_address: String,
    #[serde(default)]
    pub alive: bool,
}

/// `GET /nodes`: the managers and every cluster's nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllNodes {
    #[serde(default)]
    pub cflux: Vec<String>,
    #[serde(default)]
    pub influx: Vec<Node>,
}

/// The original's form of an address list: every address followed by a comma.
pub fn join_ips(ips: &[String]) -> String {
    ips.iter().map(|ip| format!("{ip},")).collect()
}

/// The addresses of a comma-separated list, empty entries left out.
pub fn split_ips(ips: &str) -> Vec<String> {
    ips.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_comma_terminated_and_split_back() {
        let ips = vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()];
        assert_eq!(join_ips(&ips), "10.0.0.1,10.0.0.2,");
        assert_eq!(split_ips(&join_ips(&ips)), ips);
        assert_eq!(split_ips(" 10.0.0.1 ,,"), ["10.0.0.1"]);
    }

    #[test]
    fn the_wire_names_are_the_originals() {
        let node = serde_json::to_value(Node {
            id: "n".into(),
            bind_address: "10.0.0.9".into(),
            ..Node::default()
        })
        .unwrap();
        assert_eq!(node["bind-address"], "10.0.0.9");
        let answer = serde_json::to_value(Registered {
            expiration_date: "2026-01-01T00:00:00Z".into(),
            ..Registered::default()
        })
        .unwrap();
        assert_eq!(answer["expirationDate"], "2026-01-01T00:00:00Z");
        // An original manager's minimal answer still reads.
        let minimal: Registered = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert_eq!(minimal.id, "x");
    }
}
