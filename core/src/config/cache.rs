//! The `[cache]` section: where the registry cache keeps the blobs and manifests it serves by
//! digest, and how much of the disk it may take. Routes opt in with `cache = true` (the
//! registry profile only).
//!
//! ```toml
//! [cache]
//! dir = "berth-state/cache"   # survives restarts: the index is rebuilt from the files
//! max-size = "20GiB"          # least recently used entries go first
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::units::parse_size;
use crate::errors::Errors;

/// Where the cache lives when `cache.dir` is not set.
pub const DEFAULT_CACHE_DIR: &str = "berth-state/cache";
/// The cache's size when `cache.max-size` is not set: 20 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 30;

/// `[cache]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawCache {
    /// The directory of the cached entries.
    pub dir: Option<String>,
    /// The most the entries may take together.
    pub max_size: Option<String>,
}

/// Validated `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The directory of the cached entries (created when missing).
    pub dir: PathBuf,
    /// The most the entries' bodies may take together, in bytes; least recently used entries
    /// are removed past it.
    pub max_size: u64,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            dir: DEFAULT_CACHE_DIR.into(),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

impl RawCache {
    /// Converts into a [`CacheConfig`], recording every problem in `errors`.
    pub fn validate(&self, errors: &mut Errors) -> CacheConfig {
        let mut config = CacheConfig::default();
        match self.dir.as_deref().map(str::trim) {
            None => {}
            Some("") => errors.push("cache.dir", "empty; name a directory"),
            Some(dir) => config.dir = dir.into(),
        }
        if let Some(v) = &self.max_size {
            match parse_size(v) {
                Ok(0) => errors.push(
                    "cache.max-size",
                    "0 would keep nothing; to cache nothing, leave cache = true off the routes",
                ),
                Ok(n) => config.max_size = n,
                Err(e) => errors.push("cache.max-size", e),
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(dir: Option<&str>, max_size: Option<&str>) -> (CacheConfig, Vec<String>) {
        let mut errors = Errors::default();
        let raw = RawCache {
            dir: dir.map(Into::into),
            max_size: max_size.map(Into::into),
        };
        let config = raw.validate(&mut errors);
        let messages = errors
            .into_inner()
            .iter()
            .map(ToString::to_string)
            .collect();
        (config, messages)
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(validate(None, None), (CacheConfig::default(), vec![]));
        assert_eq!(CacheConfig::default().max_size, 20 * 1024 * 1024 * 1024);
        let (config, errors) = validate(Some("/var/cache/berth"), Some("512MiB"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.dir, PathBuf::from("/var/cache/berth"));
        assert_eq!(config.max_size, 512 << 20);
    }

    #[test]
    fn bad_values_are_named() {
        let (_, errors) = validate(Some(" "), Some("0"));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("cache.dir: empty"), "{errors:?}");
        assert!(errors[1].starts_with("cache.max-size: 0 would keep nothing"));
        let (_, errors) = validate(None, Some("lots"));
        assert!(errors[0].starts_with("cache.max-size: invalid size \"lots\""));
    }
}
