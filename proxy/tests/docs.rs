//! The documentation holds together: every relative link in README.md and `docs/` reaches a
//! file (and, with `#anchor`, a heading of it); every TOML example is a configuration berth
//! accepts; every metric, Docker label and nginx-proxy variable is documented in exactly one
//! table row; README.md stays short.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// README.md and every page under docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "docs/ has {} pages", docs.len());
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The text outside fenced code blocks, and the fenced blocks with their info string.
fn split_fences(text: &str) -> (String, Vec<(String, String)>) {
    let mut prose = String::new();
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => open = Some((info.trim().to_string(), String::new())),
            }
            continue;
        }
        match open.as_mut() {
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a code fence is never closed");
    (prose, blocks)
}

/// GitHub's anchor for a heading: lowercase, spaces to hyphens, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let (prose, _) = split_fences(text);
    prose
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// Targets of `[text](target)` links in `prose`.
fn links(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = prose;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn the_anchor_rule_matches_githubs() {
    assert_eq!(
        anchor(" Certificates from ACME: `berth-acme`"),
        "certificates-from-acme-berth-acme"
    );
    assert_eq!(
        anchor(" Small GETs over TLS, keep-alive (direct is plain HTTP/1.1)"),
        "small-gets-over-tls-keep-alive-direct-is-plain-http11"
    );
    assert_eq!(
        links("see [a](x.md#b) and [c](https://e/)"),
        ["x.md#b", "https://e/"]
    );
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (path, text) in pages() {
        let (prose, _) = split_fences(&text);
        for target in links(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target}: no such file", path.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&target_text).iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {target}: no such heading", path.display()));
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_toml_example_is_a_valid_configuration() {
    let mut checked = 0;
    let mut invalid = Vec::new();
    for (path, text) in pages() {
        for (info, body) in split_fences(&text).1 {
            if info != "toml" {
                continue;
            }
            checked += 1;
            // A file of repository rules is checked as a route naming it would read it.
            let rules_file;
            let body = if body.contains("[[rule]]") && !body.contains("[[route]]") {
                rules_file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(rules_file.path(), &body).unwrap();
                format!(
                    "[[route]]\nhost = \"r.test\"\nupstreams = [\"127.0.0.1:5000\"]\n\
                     profile = \"registry\"\nauth.htpasswd = \"/h\"\nauth.groups = \"/g\"\n\
                     client-ca = \"/c.pem\"\nauth.repositories-file = \"{}\"\n",
                    rules_file.path().display()
                )
            } else {
                body
            };
            // A fragment (`[server]` alone) is checked with a listener added, as it would
            // sit in a whole file.
            let whole = if body.contains("[listen]") {
                body.clone()
            } else {
                format!("[listen]\nhttp = \"127.0.0.1:8080\"\n\n{body}")
            };
            if let Err(errors) = berth_core::config::parse_config(&whole) {
                invalid.push(format!(
                    "{}: a TOML example is not valid:\n  {}\n{body}",
                    path.display(),
                    errors
                        .0
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                ));
            }
        }
    }
    assert!(checked >= 3, "only {checked} TOML examples found");
    assert!(invalid.is_empty(), "{}", invalid.join("\n\n"));
}

/// For each name, the rows of the reference tables (page and line) that name it in
/// backticks in their first two cells. A reference row starts with a name in backticks
/// (`| \`berth_routes{source}\` | gauge | ...`, `| \`berth.port\` | \`VIRTUAL_PORT\` | ...`).
/// The reference is `docs/`; README.md and the migration guide, which name keys to explain
/// something else, are not.
fn table_rows_naming(names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (path, text) in pages() {
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "README.md" || name == "migrate-from-nginx-proxy.md" {
            continue;
        }
        let (prose, _) = split_fences(&text);
        for (i, line) in prose.lines().enumerate() {
            let Some(row) = line.strip_prefix("| `") else {
                continue;
            };
            let row = format!("`{row}");
            // The first two cells: metrics and labels are named in the first, variables
            // in the second.
            let cells: String = row.split('|').take(2).collect::<Vec<_>>().join("|");
            for (name, rows) in &mut found {
                let quoted = [
                    format!("`{name}`"),
                    format!("`{name}{{"),
                    format!("`{name}="),
                ];
                if quoted.iter().any(|q| cells.contains(q.as_str())) {
                    rows.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    found
}

fn assert_once(found: &BTreeMap<String, Vec<String>>) {
    let wrong: Vec<String> = found
        .iter()
        .filter(|(_, rows)| rows.len() != 1)
        .map(|(name, rows)| format!("{name}: {} table rows {rows:?}", rows.len()))
        .collect();
    assert!(
        wrong.is_empty(),
        "each must be documented in exactly one table row:\n{}",
        wrong.join("\n")
    );
}

/// The metric names registered in the source of both binaries.
fn metric_names() -> Vec<String> {
    let mut names = Vec::new();
    for file in ["proxy/src/metrics.rs", "acme-worker/src/metrics.rs"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            let is_name = piece.starts_with("berth_")
                && piece.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if is_name && !names.iter().any(|n| n == piece) {
                names.push(piece.to_string());
            }
        }
    }
    assert!(names.len() >= 18, "found only {names:?}");
    names
}

#[test]
fn every_metric_is_documented_once() {
    assert_once(&table_rows_naming(&metric_names()));
}

#[test]
fn every_label_and_variable_is_documented_once() {
    let names = berth_core::labels::schema_names();
    assert!(names.iter().any(|n| n == "berth.host"));
    assert!(names.iter().any(|n| n == "LETSENCRYPT_HOST"));
    let found = table_rows_naming(&names);
    assert_once(&found);
    for (name, rows) in found {
        assert!(
            rows[0].contains("docs/labels.md"),
            "{name} is documented outside docs/labels.md: {rows:?}"
        );
    }
}

#[test]
fn every_route_key_a_container_may_not_set_is_documented_with_its_reason() {
    let text = std::fs::read_to_string(root().join("docs/labels.md")).unwrap();
    let section = text
        .split("### Route keys a container may not set")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("docs/labels.md has no section on the route keys a container may not set");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let refused = berth_core::labels::REFUSED;
    assert_eq!(rows.len(), refused.len(), "{rows:#?}");
    for (key, why) in refused {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("| `{key}` |")) && r.contains(why)),
            "{key} ({why}) is not documented as refused: {rows:#?}"
        );
    }
}

/// The lines of the first fenced or `//!` block after `marker` in `text`, whitespace-squeezed.
fn block_after(text: &str, marker: &str) -> String {
    let rest = text
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{marker:?} not found"));
    let lines: Vec<&str> = rest
        .lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .skip_while(|l| *l != "```text")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_architecture_page_shows_the_chain_order_of_chain_rs() {
    let chain = std::fs::read_to_string(root().join("plugins/src/chain.rs")).unwrap();
    let page = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let in_code = block_after(&chain, "The order of the chain is decided here");
    assert!(in_code.starts_with("https →"), "{in_code}");
    assert_eq!(
        block_after(&page, "The chain order lives in one place"),
        in_code
    );
}

#[test]
fn the_readme_is_short_and_opens_with_the_two_commands() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(text.len() < 15 * 1024, "README.md is {} bytes", text.len());
    let (_, blocks) = split_fences(&text);
    let first = &blocks[0].1;
    assert!(first.contains("./scripts/run"), "first block: {first}");
    assert!(first.contains("./scripts/test"), "first block: {first}");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec ./scripts/test"),
        ".ci/run does not run ./scripts/test:\n{ci}"
    );
}
