//! The `--config` TOML file every binary reads beneath its flags and
//! environment: keys are the flag names, unknown keys are refused.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// The settings of `path`, or the defaults (all unset) without a file.
pub fn read<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The bearer token given either inline (`token_flag`, e.g. `--cflux-token`)
/// or in a file (`file_flag`): never both; the file's surrounding whitespace
/// (its trailing newline) is trimmed; an empty token is an error.
pub fn token(
    inline: Option<String>,
    file: Option<&Path>,
    token_flag: &str,
    file_flag: &str,
) -> anyhow::Result<Option<String>> {
    let token = match (inline, file) {
        (Some(_), Some(_)) => anyhow::bail!("give {token_flag} or {file_flag}, not both"),
        (Some(t), None) => t,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("{file_flag}: cannot read {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        anyhow::bail!("the bearer token ({token_flag} or {file_flag}) is empty");
    }
    Ok(Some(token))
}
