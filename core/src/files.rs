//! Reading the small files a route names (htpasswd files, token secrets), which a container's
//! labels may name too: only a regular file is read, never more than a limit, and opening a
//! FIFO or a device never blocks the caller (the route writer builds routes with these).
//!
//! Which paths a label may name at all is [`LabelFiles`]' decision (`docker.label-files`).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Reads `path` if it is a regular file of at most `limit` bytes (symlinks are followed).
/// The file is opened non-blocking, so a FIFO or a device is refused at once rather than
/// waited on.
///
/// # Errors
/// A message saying what is wrong — missing, not a regular file, larger than `limit`,
/// unreadable — without the path (callers name it) and never quoting the content.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".to_string());
    }
    if meta.len() > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that grew since the look above.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// The largest CA file berth reads (`upstream-ca-file`, `acme.ca-bundle`): several times a
/// system's whole bundle.
pub const CA_FILE_LIMIT: u64 = 4 << 20;

/// Reads a PEM CA file: a regular file of at most [`CA_FILE_LIMIT`] bytes.
///
/// # Errors
/// What is wrong with the file, as [`read_regular`] says, without the path.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    read_regular(path, CA_FILE_LIMIT)
}

/// Checks that a CA file can be read (a regular file, [`read_ca_file`]) and
/// holds at least one PEM certificate.
///
/// # Errors
/// A message naming the file otherwise.
pub fn check_ca_file(path: &str) -> Result<(), String> {
    let bytes = read_ca_file(Path::new(path)).map_err(|e| format!("\"{path}\": {e}"))?;
    if String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(format!("\"{path}\" holds no PEM certificate"))
    }
}

/// A route key that names a file berth reads (`auth.htpasswd`, `upstream-ca-file`, ...).
/// From the config file it is taken as written; from a container's labels it decodes only
/// when it lies under `docker.label-files` ([`LabelFiles::check`]), so no route key that
/// names a file can be set from a label without that check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename = "berth::FilePath")]
pub struct FilePath(String);

impl FilePath {
    /// The name serde knows the type by: the label decoder checks values of this type.
    pub const SERDE_NAME: &'static str = "berth::FilePath";
}

impl std::ops::Deref for FilePath {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for FilePath {
    fn from(path: String) -> Self {
        FilePath(path)
    }
}

/// `docker.label-files`: the directories under which a container's labels may name files
/// (`berth.auth.htpasswd`, `berth.auth.token-secret-file`). Labels are less trusted than the
/// config file: whoever may start a container must not make berth read `/etc/shadow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFiles {
    dirs: Vec<PathBuf>,
}

/// The directory labels may name files under by default: where the documented examples put
/// htpasswd files and token secrets.
pub const DEFAULT_LABEL_FILES: &str = "/etc/berth";

impl Default for LabelFiles {
    fn default() -> Self {
        LabelFiles {
            dirs: vec![PathBuf::from(DEFAULT_LABEL_FILES)],
        }
    }
}

impl LabelFiles {
    /// Labels may name files under `dirs`.
    ///
    /// # Errors
    /// A message for the first directory that is not absolute, holds `.` or `..`, or is `/`
    /// (every file on the host).
    pub fn new(dirs: &[String]) -> Result<LabelFiles, String> {
        let mut out = Vec::new();
        for dir in dirs {
            let path = PathBuf::from(dir.trim());
            if !path.is_absolute() || !plain_components(&path) {
                return Err(format!(
                    "\"{dir}\" must be an absolute path without . or .. segments"
                ));
            }
            if path.parent().is_none() {
                return Err(format!(
                    "\"{dir}\" would let containers name any file on the host; name the \
                     directory that holds their files"
                ));
            }
            out.push(path);
        }
        Ok(LabelFiles { dirs: out })
    }

    /// The directories, as configured.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Checks a path a label names.
    ///
    /// # Errors
    /// When it is not absolute, holds `.` or `..`, or is not inside one of the directories.
    pub fn check(&self, value: &str) -> Result<PathBuf, String> {
        let path = Path::new(value);
        if !path.is_absolute() {
            return Err(format!("\"{value}\" is not an absolute path"));
        }
        if !plain_components(path) {
            return Err(format!("\"{value}\" has . or .. segments"));
        }
        if !self
            .dirs
            .iter()
            .any(|dir| path.starts_with(dir) && path != dir)
        {
            let dirs: Vec<String> = self
                .dirs
                .iter()
                .map(|d| format!("\"{}\"", d.display()))
                .collect();
            return Err(if dirs.is_empty() {
                "docker.label-files is empty: containers may not name files".to_string()
            } else {
                format!(
                    "\"{value}\" is outside docker.label-files ({}): a container may name \
                     files only there",
                    dirs.join(", ")
                )
            });
        }
        Ok(path.to_path_buf())
    }
}

/// Whether `path` has no `.` or `..` segment (`Path::components` drops inner `.` segments,
/// so the text is looked at too).
fn plain_components(path: &Path) -> bool {
    let text = path.to_string_lossy();
    path.components().all(|c| c != Component::ParentDir)
        && !text
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read_and_nothing_blocks() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, "alice:x\n").expect("write");
        assert_eq!(read_regular(&file, 8).expect("fits"), b"alice:x\n");
        assert_eq!(
            read_regular(&file, 7).expect_err("too big"),
            "larger than 7 bytes"
        );
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // Opened without a writer: a blocking open would never return.
        assert_eq!(
            read_regular(&fifo, 1 << 20).expect_err("fifo"),
            "not a regular file"
        );
        for device in ["/dev/zero", "/dev/null", "/dev/urandom"] {
            assert_eq!(
                read_regular(Path::new(device), 1 << 20).expect_err(device),
                "not a regular file"
            );
        }
        assert_eq!(
            read_regular(dir.path(), 1 << 20).expect_err("a directory"),
            "not a regular file"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert_eq!(
            read_regular(&link, 1 << 20).expect_err("link to a device"),
            "not a regular file"
        );
        assert!(read_regular(&dir.path().join("missing"), 1)
            .expect_err("missing")
            .starts_with("cannot read: "));
    }

    #[test]
    fn labels_name_files_only_under_the_configured_directories() {
        let files = LabelFiles::new(&["/etc/berth".into(), "/run/secrets/".into()]).expect("ok");
        for good in ["/etc/berth/htpasswd", "/etc/berth/a/b", "/run/secrets/x"] {
            assert_eq!(
                files.check(good).expect(good),
                PathBuf::from(good),
                "{good}"
            );
        }
        for (bad, why) in [
            ("/etc/shadow", "outside docker.label-files"),
            ("/etc/berthx/htpasswd", "outside docker.label-files"),
            ("/etc/berth", "outside docker.label-files"),
            ("/etc/berth/../shadow", "has . or .."),
            ("/etc/berth/./x", "has . or .."),
            ("/proc/self/environ", "outside docker.label-files"),
            ("/dev/zero", "outside docker.label-files"),
            ("htpasswd", "not an absolute path"),
        ] {
            let e = files.check(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(LabelFiles::default().check("/etc/berth/htpasswd").is_ok());
        assert!(LabelFiles::new(&[])
            .expect("empty")
            .check("/etc/berth/x")
            .expect_err("none")
            .contains("is empty"));
        for bad in ["/", "etc/berth", "/etc/../", "/etc/berth/.."] {
            assert!(LabelFiles::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
