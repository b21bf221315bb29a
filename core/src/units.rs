//! Human-readable durations and sizes, as written in the config file and in Docker labels.
//!
//! ```toml
//! read-timeout = "900s"   # humantime syntax: 500ms, 15m, 1h 30m, 30d; "0" means zero
//! max-body = "10GiB"      # bytes: 0, 1024, 512KiB, 10GiB, 5MB
//! ```

use std::time::Duration;

/// Parses a duration such as `900s`, `15m`, `30d` or `0`.
///
/// # Errors
/// Returns a message naming the value when it is not a duration.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let trimmed = value.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration \"{value}\" ({e}); write e.g. \"900s\", \"15m\", \"30d\"")
    })
}

/// Parses a byte size such as `0`, `1048576`, `512KiB`, `10GiB` or `5MB`.
///
/// # Errors
/// Returns a message naming the value when it is not a size.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let trimmed = value.trim();
    if trimmed.starts_with('-') {
        return Err(format!("invalid size \"{value}\": must not be negative"));
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            format!("invalid size \"{value}\" ({e}); write e.g. \"0\", \"512MiB\", \"10GiB\"")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("0", 0),
            ("900s", 900),
            ("15m", 900),
            ("1h 30m", 5400),
            ("30d", 30 * 86400),
            (" 10s ", 10),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "10", "abc", "-5s", "10 parsecs"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("1024", 1024),
            ("512KiB", 512 * 1024),
            ("10GiB", 10 << 30),
            ("5MB", 5_000_000),
            ("1 MiB", 1 << 20),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "abc", "-1", "10 apples"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        }
    }
}
