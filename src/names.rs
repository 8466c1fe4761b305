//! The naming rules both sides of the contract share: what a cluster name and
//! a node ID may be. The manager refuses what breaks them; the agent and
//! `cfluxctl` check their own settings against the same rules before they
//! ever reach a manager.

/// The longest cluster name or node ID, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name breaks the rules; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{what} is {len} bytes long; the limit is {MAX_NAME_BYTES}")]
    TooLong { what: &'static str, len: usize },
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

fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(what));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn node_ids() {
        assert!(validate_node_id("3f2a").is_ok());
        assert_eq!(validate_node_id("a/b"), Err(NameError::Slash("node_id")));
        assert_eq!(validate_node_id(""), Err(NameError::Empty("node_id")));
    }
}
