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
