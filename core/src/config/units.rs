//! Values of the config file that are not durations or sizes ([`crate::units`]): listen
//! addresses, and secrets given inline or by file.

pub use crate::files::check_ca_file;
pub use crate::units::{parse_duration, parse_size};

/// Parses a listen address (`listen.*`, `acme.metrics`): `""` means none.
///
/// # Errors
/// A message naming the value when it is not a socket address.
pub fn parse_listen_addr(value: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value
        .trim()
        .parse::<std::net::SocketAddr>()
        .map(Some)
        .map_err(|_| {
            format!("invalid socket address \"{value}\"; write an IP address and a port, e.g. \"0.0.0.0:443\" or \"[::1]:9180\"")
        })
}

/// A key that needs a bearer token file beside it (`acme.feed`, `tls.feed`): both set, or
/// neither. The value goes through `parse`; the token file must hold a usable token
/// ([`crate::feed::read_token`]). `None` when unset or on an error (recorded in `errors`).
pub(super) fn with_token_file<T>(
    errors: &mut crate::errors::Errors,
    key: &str,
    value: Option<&str>,
    file: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<(T, std::path::PathBuf)> {
    let file_key = format!("{key}-token-file");
    match (value, file) {
        (None, None) => None,
        (Some(_), None) => {
            errors.push(
                file_key,
                format!(
                    "required with {key}: the feed hands out private keys only to holders of \
                     its token"
                ),
            );
            None
        }
        (None, Some(_)) => {
            errors.push(key, format!("{file_key} is set but {key} is not"));
            None
        }
        (Some(value), Some(file)) => {
            let parsed = errors.check(key, parse(value));
            let file = std::path::PathBuf::from(file);
            let token_ok = errors
                .check(&file_key, crate::feed::read_token(&file))
                .is_some();
            parsed.filter(|_| token_ok).map(|v| (v, file))
        }
    }
}
