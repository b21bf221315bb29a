//! Where the configuration comes from, and reading it: one way for both binaries.

use std::path::PathBuf;

use super::{parse_config, Config, EMBEDDED_DEFAULT};
use crate::errors::{ConfigError, ConfigErrors};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `configs/berth.toml`, compiled into the binary.
    Embedded,
    /// A file given with `--config`.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Embedded => f.write_str("the embedded default configuration"),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl ConfigSource {
    /// The source `--config` names: the file, or the embedded default without one.
    pub fn from_arg(path: Option<PathBuf>) -> ConfigSource {
        path.map_or(ConfigSource::Embedded, ConfigSource::File)
    }
}

/// Reads and validates the configuration.
///
/// # Errors
/// Returns every problem found, or one that says the file could not be read.
pub fn load_config(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    match source {
        ConfigSource::Embedded => parse_config(EMBEDDED_DEFAULT),
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    path: String::new(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            parse_config(&text)
        }
    }
}
