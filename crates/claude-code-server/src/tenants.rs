//! Tenants: who may call, with which token hashes, in which project roots, with which
//! `CLAUDE_CONFIG_DIR` and which limits.
//!
//! # The tenants file
//!
//! `--tenants-file` (or [`ServerConfig::tenants`](crate::ServerConfig::tenants) with
//! [`load_tenants`]) names every tenant: TOML, or JSON when the file name ends in
//! `.json`, with the same fields:
//!
//! ```toml
//! [[tenants]]
//! name = "acme"                       # 1 to 64 of A-Z a-z 0-9 . _ -
//! token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! project_roots = ["/srv/acme"]       # the first is where a run without `cwd` works
//! config_dir = "/srv/claude-config/acme"  # its CLIs' CLAUDE_CONFIG_DIR (created 0700)
//! operator = false                    # sees /metrics, /v1/audit, fleet-wide /v1/stats
//!
//! [tenants.limits]                    # each optional: no limit
//! max_concurrent = 2                  # runs in progress (beyond: queued)
//! max_queued = 8                      # runs waiting (beyond: 429)
//! runs_per_minute = 30                # runs started in any minute (beyond: 429)
//! ```
//!
//! Tokens are stored as the hex SHA-256 of the token (`claude-code-server hash-token`
//! reads a token on standard input and prints it); a presented token is hashed and
//! compared with every stored hash in constant time. No plaintext token is kept in
//! the file, the database or the log: runs, sessions and audit rows carry the tenant's
//! name.
//!
//! A tenant's runs work in one of its project roots: a relative `cwd` is resolved
//! under the first, an absolute one must lie in one of them. Its CLIs get its
//! `config_dir` as `CLAUDE_CONFIG_DIR` (conversation transcripts, settings, memory
//! stay apart from every other tenant's); without one they share the server's. Every
//! replica of a fleet must be given the same tenants file (the same names, roots and
//! config directories), as any replica may run any tenant's run.
//!
//! Tokens given with `--token` or `--token-file` still work beside a tenants file:
//! each is a tenant of its own in the server's project root, with the server-wide
//! limits (`--tenant-max-*`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::TenantLimits;

/// One tenant of a tenants file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Tenant {
    /// Its name: what runs, sessions, the audit log and the metrics carry.
    pub name: String,
    /// The hex SHA-256 of each of its tokens.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Its project roots (at least one); the first is the default working directory.
    pub project_roots: Vec<PathBuf>,
    /// The `CLAUDE_CONFIG_DIR` of its CLIs (`None`: the server's).
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    /// Its limits (unset ones: none).
    #[serde(default)]
    pub limits: TenantLimits,
    /// Whether its callers are operators (`/metrics`, `/v1/audit`, the fleet-wide
    /// figures of `/v1/stats`).
    #[serde(default)]
    pub operator: bool,
}

impl Tenant {
    /// A tenant working in `root`, with no token yet.
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>) -> Tenant {
        Tenant {
            name: name.into(),
            token_sha256: Vec::new(),
            project_roots: vec![root.into()],
            config_dir: None,
            limits: TenantLimits::default(),
            operator: false,
        }
    }

    /// Accepts this token (only its hash is kept).
    #[must_use]
    pub fn token(mut self, token: &str) -> Tenant {
        self.token_sha256.push(hash_token(token));
        self
    }

    /// Accepts the token with this hex SHA-256.
    #[must_use]
    pub fn token_sha256(mut self, hash: impl Into<String>) -> Tenant {
        self.token_sha256.push(hash.into());
        self
    }

    /// One more project root.
    #[must_use]
    pub fn project_root(mut self, root: impl Into<PathBuf>) -> Tenant {
        self.project_roots.push(root.into());
        self
    }

    /// Its CLIs' `CLAUDE_CONFIG_DIR`.
    #[must_use]
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Tenant {
        self.config_dir = Some(dir.into());
        self
    }

    /// Its limits.
    #[must_use]
    pub fn limits(mut self, limits: TenantLimits) -> Tenant {
        self.limits = limits;
        self
    }

    /// Makes its callers operators.
    #[must_use]
    pub fn operator(mut self, operator: bool) -> Tenant {
        self.operator = operator;
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    tenants: Vec<Tenant>,
}

/// The hex SHA-256 of a token (without surrounding whitespace, as the server reads
/// tokens), as a tenants file stores it.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads a tenants file (JSON when its name ends in `.json`, TOML otherwise) and
/// checks it (see [`check_tenants`]).
///
/// # Errors
///
/// [`std::io::ErrorKind::InvalidInput`] naming the file and what is wrong with it; the
/// file's own errors otherwise.
pub fn load_tenants(path: &Path) -> std::io::Result<Vec<Tenant>> {
    let invalid = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the tenants file {}: {why}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("the tenants file {}: {err}", path.display()),
        )
    })?;
    let file: TenantsFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|err| invalid(err.to_string()))?
    } else {
        toml::from_str(&text).map_err(|err| invalid(err.to_string()))?
    };
    check_tenants(&file.tenants).map_err(|err| invalid(err.to_string()))?;
    Ok(file.tenants)
}

/// Whether `name` may name a tenant: 1 to 64 of `A-Z a-z 0-9 . _ -`, and not 64 hex
/// digits (the ids of `--token` tenants) nor `local`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        && name != "local"
}

/// Checks tenants: well-formed unique names, well-formed hashes no two tenants share,
/// at least one project root each.
///
/// # Errors
///
/// [`std::io::ErrorKind::InvalidInput`] saying what is wrong.
pub fn check_tenants(tenants: &[Tenant]) -> std::io::Result<()> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    for tenant in tenants {
        if !valid_name(&tenant.name) {
            return Err(bad(format!(
                "tenant name {:?} must be 1 to 64 of A-Z a-z 0-9 . _ - (and not 64 hex digits nor \"local\")",
                tenant.name
            )));
        }
        if !names.insert(tenant.name.as_str()) {
            return Err(bad(format!("tenant {:?} is named twice", tenant.name)));
        }
        if tenant.project_roots.is_empty() {
            return Err(bad(format!("tenant {:?} has no project root", tenant.name)));
        }
        for hash in &tenant.token_sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "tenant {:?}: a token_sha256 must be 64 hex digits (claude-code-server hash-token prints one)",
                    tenant.name
                )));
            }
            if !hashes.insert(hash.to_ascii_lowercase()) {
                return Err(bad(format!(
                    "tenant {:?}: a token hash is given twice",
                    tenant.name
                )));
            }
        }
    }
    Ok(())
}

/// A tenant as the server uses it: canonical roots, hashes as bytes.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) hashes: Vec<[u8; 32]>,
    pub(crate) roots: Vec<PathBuf>,
    pub(crate) config_dir: Option<PathBuf>,
    pub(crate) limits: TenantLimits,
    pub(crate) operator: bool,
}

impl Resolved {
    /// Canonicalizes the roots (each must be a directory) and creates the config
    /// directory (private to the server's user) when it does not exist.
    pub(crate) fn new(tenant: &Tenant) -> std::io::Result<Resolved> {
        let roots = tenant
            .project_roots
            .iter()
            .map(|root| {
                let full = root.canonicalize().map_err(|err| {
                    std::io::Error::new(
                        err.kind(),
                        format!(
                            "tenant {:?}: project root {}: {err}",
                            tenant.name,
                            root.display()
                        ),
                    )
                })?;
                if !full.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "tenant {:?}: project root {} is not a directory",
                            tenant.name,
                            root.display()
                        ),
                    ));
                }
                Ok(full)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let config_dir = match &tenant.config_dir {
            Some(dir) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|err| {
                        std::io::Error::new(
                            err.kind(),
                            format!(
                                "tenant {:?}: config dir {}: {err}",
                                tenant.name,
                                dir.display()
                            ),
                        )
                    })?;
                Some(dir.canonicalize()?)
            }
            None => None,
        };
        let hashes = tenant
            .token_sha256
            .iter()
            .filter_map(|h| parse_hash(h))
            .collect();
        Ok(Resolved {
            name: tenant.name.clone(),
            hashes,
            roots,
            config_dir,
            limits: tenant.limits.clone(),
            operator: tenant.operator,
        })
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let toml_file = dir.path().join("t.toml");
        std::fs::write(
            &toml_file,
            format!(
                "[[tenants]]\nname = \"acme\"\ntoken_sha256 = [\"{}\"]\nproject_roots = [\"/tmp\"]\n[tenants.limits]\nmax_concurrent = 2\n",
                hash_token("secret")
            ),
        )
        .unwrap();
        let tenants = load_tenants(&toml_file).unwrap();
        assert_eq!(tenants[0].limits.max_concurrent, Some(2));
        assert_eq!(
            Resolved::new(&tenants[0]).unwrap().hashes[0],
            <[u8; 32]>::from(Sha256::digest(b"secret"))
        );
        let json_file = dir.path().join("t.json");
        std::fs::write(
            &json_file,
            r#"{"tenants": [{"name": "a", "project_roots": ["/tmp"], "token_sha256": ["xyz"]}]}"#,
        )
        .unwrap();
        let err = load_tenants(&json_file).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        for bad in ["", "local", "a b", &"ab".repeat(32)] {
            assert!(!valid_name(bad), "{bad}");
        }
        let twice = [
            Tenant::new("a", "/tmp").token("x"),
            Tenant::new("b", "/tmp").token("x"),
        ];
        assert!(check_tenants(&twice).is_err());
    }
}
