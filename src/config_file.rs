//! The `--config` TOML file every binary reads beneath its flags and
//! environment: keys are the flag names, unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a binary's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} {}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A setting, or a combination of settings, that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn invalid(what: impl Into<String>) -> Self {
        ConfigError::Invalid(what.into())
    }
}

/// The settings of `path`, or the defaults (all unset) without a file.
pub fn read<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config file".into(),
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The bearer token given either inline (`token_flag`, e.g. `--cflux-token`)
/// or in a file (`file_flag`): never both; the file's surrounding whitespace
/// (its trailing newline) is trimmed; an empty token is an error.
pub fn token(
    inline: Option<String>,
    file: Option<&Path>,
    token_flag: &str,
    file_flag: &str,
) -> Result<Option<String>, ConfigError> {
    let token = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(format!(
                "give {token_flag} or {file_flag}, not both"
            )))
        }
        (Some(t), None) => t,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                what: file_flag.to_owned(),
                path: path.to_owned(),
                source,
            })?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(ConfigError::invalid(format!(
            "the bearer token ({token_flag} or {file_flag}) is empty"
        )));
    }
    Ok(Some(token))
}
