//! [`SessionKey`] and the CLI's transcript path layout.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The longest sanitized project directory name the CLI writes before it truncates the
/// name and appends a hash (paths longer than this get `<first 200 chars>-<hash>`).
const MAX_SANITIZED_LENGTH: usize = 200;

/// Identifies one transcript in a [`SessionStore`](super::SessionStore): a project, a
/// session, and for a subagent's transcript a subpath.
///
/// The CLI keeps a session's transcript at
/// `$CLAUDE_CONFIG_DIR/projects/<project>/<session>.jsonl` and each subagent's at
/// `$CLAUDE_CONFIG_DIR/projects/<project>/<session>/subagents/agent-<id>.jsonl`. A key
/// mirrors that: `project_key` is the project directory name (by default the working
/// directory with every character that is not an ASCII letter or digit replaced by `-`,
/// see [`project_key_for_directory`]; a multi-tenant service may use a tenant id
/// instead), `session_id` the session, and `subpath` the path below the session
/// directory without `.jsonl` (`subagents/agent-a692b32aece81dca1`).
///
/// A key is valid by construction: no part is empty or holds a NUL; the session id
/// holds no `/` or `\`; a subpath is relative, `/`-separated, without `.` or `..`
/// components or backslashes. So a key can always be used as a path below a config
/// directory without escaping it.
///
/// ```
/// use claude_code_sdk::store::SessionKey;
///
/// let main = SessionKey::new("-srv-app", "4f1c2d3e-0000-4000-8000-000000000001")?;
/// let agent = main.with_subpath("subagents/agent-a692b32aece81dca1")?;
/// assert_eq!(agent.main(), main);
/// assert!(SessionKey::new("-srv-app", "../etc").is_err());
/// # Ok::<(), claude_code_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    project_key: String,
    session_id: String,
    subpath: Option<String>,
}

impl SessionKey {
    /// The key of a session's main transcript.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when a part is empty or holds a
    /// NUL, or the session id holds a path separator or is `.`/`..`.
    pub fn new(project_key: impl Into<String>, session_id: impl Into<String>) -> Result<Self> {
        let project_key = project_key.into();
        let session_id = session_id.into();
        check_part("project key", &project_key)?;
        check_part("session id", &session_id)?;
        if project_key.contains(['/', '\\']) || matches!(project_key.as_str(), "." | "..") {
            return Err(invalid(format!(
                "a project key cannot hold a path separator or be `.`/`..`: {project_key:?}"
            )));
        }
        if session_id.contains(['/', '\\']) || matches!(session_id.as_str(), "." | "..") {
            return Err(invalid(format!(
                "a session id cannot hold a path separator or be `.`/`..`: {session_id:?}"
            )));
        }
        Ok(SessionKey {
            project_key,
            session_id,
            subpath: None,
        })
    }

    /// The key of a transcript below this session, such as a subagent's
    /// (`subagents/agent-<id>`).
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when the subpath is empty,
    /// absolute, holds `.`, `..`, empty components, a backslash or a NUL.
    pub fn with_subpath(&self, subpath: impl Into<String>) -> Result<Self> {
        let subpath = subpath.into();
        check_part("subpath", &subpath)?;
        let bad = subpath.starts_with('/')
            || subpath.contains('\\')
            || subpath
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if bad {
            return Err(invalid(format!(
                "a subpath must be relative and `/`-separated, without `.`, `..` or empty parts: {subpath:?}"
            )));
        }
        Ok(SessionKey {
            project_key: self.project_key.clone(),
            session_id: self.session_id.clone(),
            subpath: Some(subpath),
        })
    }

    /// The key of the main transcript of a working directory's session
    /// (`project_key` = [`project_key_for_directory`]).
    ///
    /// # Errors
    ///
    /// As [`SessionKey::new`].
    pub fn for_directory(cwd: impl AsRef<Path>, session_id: impl Into<String>) -> Result<Self> {
        SessionKey::new(project_key_for_directory(cwd), session_id)
    }

    /// The project key.
    pub fn project_key(&self) -> &str {
        &self.project_key
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The subpath below the session, `None` for the main transcript.
    pub fn subpath(&self) -> Option<&str> {
        self.subpath.as_deref()
    }

    /// Whether this is a session's main transcript (no subpath).
    pub fn is_main(&self) -> bool {
        self.subpath.is_none()
    }

    /// The key of the main transcript of the same session.
    #[must_use]
    pub fn main(&self) -> SessionKey {
        SessionKey {
            project_key: self.project_key.clone(),
            session_id: self.session_id.clone(),
            subpath: None,
        }
    }

    /// The same session and subpath under another project key.
    ///
    /// # Errors
    ///
    /// As [`SessionKey::new`], for the new project key.
    pub fn in_project(&self, project_key: impl Into<String>) -> Result<SessionKey> {
        let key = SessionKey::new(project_key, self.session_id.clone())?;
        match &self.subpath {
            Some(subpath) => key.with_subpath(subpath.clone()),
            None => Ok(key),
        }
    }

    /// The key of a transcript file the CLI wrote below `projects_dir`
    /// (`$CLAUDE_CONFIG_DIR/projects`): `<project>/<session>.jsonl` is a main
    /// transcript, `<project>/<session>/<sub>/…/<name>.jsonl` a subpath. `None` for a
    /// path outside `projects_dir` or of another shape.
    ///
    /// ```
    /// use claude_code_sdk::store::SessionKey;
    ///
    /// let key = SessionKey::from_transcript_path(
    ///     "/home/u/.claude/projects/-srv-app/s1/subagents/agent-7.jsonl",
    ///     "/home/u/.claude/projects",
    /// ).unwrap();
    /// assert_eq!((key.project_key(), key.session_id()), ("-srv-app", "s1"));
    /// assert_eq!(key.subpath(), Some("subagents/agent-7"));
    /// ```
    pub fn from_transcript_path(
        path: impl AsRef<Path>,
        projects_dir: impl AsRef<Path>,
    ) -> Option<SessionKey> {
        let relative = path.as_ref().strip_prefix(projects_dir.as_ref()).ok()?;
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str()?),
                _ => return None,
            }
        }
        match parts.as_slice() {
            [project, file] => {
                let session = file.strip_suffix(".jsonl")?;
                SessionKey::new(*project, session).ok()
            }
            [project, session, rest @ ..] if rest.len() >= 2 => {
                let (last, middle) = rest.split_last()?;
                let name = last.strip_suffix(".jsonl")?;
                let mut subpath = middle.join("/");
                subpath.push('/');
                subpath.push_str(name);
                SessionKey::new(*project, *session)
                    .ok()?
                    .with_subpath(subpath)
                    .ok()
            }
            _ => None,
        }
    }

    /// Where the CLI keeps this transcript below `projects_dir`, in the project
    /// directory `project_dir_name` (usually [`SessionKey::project_key`]).
    pub fn transcript_path(&self, projects_dir: &Path, project_dir_name: &str) -> PathBuf {
        let project = projects_dir.join(project_dir_name);
        match &self.subpath {
            None => project.join(format!("{}.jsonl", self.session_id)),
            Some(subpath) => {
                let mut path = project.join(&self.session_id);
                for part in subpath.split('/') {
                    path.push(part);
                }
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".jsonl");
                path.set_file_name(name);
                path
            }
        }
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project_key, self.session_id)?;
        if let Some(subpath) = &self.subpath {
            write!(f, "/{subpath}")?;
        }
        Ok(())
    }
}

fn check_part(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(format!("a {what} cannot be empty")));
    }
    if value.contains('\0') {
        return Err(invalid(format!("a {what} cannot hold a NUL character")));
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOptions, message)
}

/// The CLI's project directory name for a working directory: every character that is
/// not an ASCII letter or digit becomes `-` (`/srv/my app` → `-srv-my-app`). A name
/// longer than 200 characters is cut to 200 and gets `-` and a 32-bit hash of the
/// path in base 36 appended, as the CLI does.
///
/// The path is used as given: pass the canonical path (the CLI canonicalizes its
/// working directory, so `/tmp` on a system where it is a symlink may differ).
///
/// ```
/// use claude_code_sdk::store::project_key_for_directory;
///
/// assert_eq!(project_key_for_directory("/srv/my app"), "-srv-my-app");
/// ```
pub fn project_key_for_directory(cwd: impl AsRef<Path>) -> String {
    let path = cwd.as_ref().to_string_lossy();
    // Per UTF-16 code unit, as the CLI (JavaScript) does: a character outside the
    // Basic Multilingual Plane becomes `--`.
    let sanitized: String = path
        .encode_utf16()
        .map(|unit| match char::from_u32(u32::from(unit)) {
            Some(c) if c.is_ascii_alphanumeric() => c,
            _ => '-',
        })
        .collect();
    if sanitized.len() <= MAX_SANITIZED_LENGTH {
        return sanitized;
    }
    format!(
        "{}-{}",
        &sanitized[..MAX_SANITIZED_LENGTH],
        path_hash(&path)
    )
}

/// The CLI's 32-bit string hash (`h = h * 31 + code unit`, wrapping, absolute value),
/// in base 36.
fn path_hash(text: &str) -> String {
    let mut hash: i32 = 0;
    for unit in text.encode_utf16() {
        hash = hash
            .wrapping_shl(5)
            .wrapping_sub(hash)
            .wrapping_add(i32::from(unit));
    }
    let mut n = hash.unsigned_abs();
    if n == 0 {
        return "0".to_owned();
    }
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The CLI's config directory for an environment: `CLAUDE_CONFIG_DIR` when set and
/// not empty, else `$HOME/.claude`. `env` overrides the process environment (pass the
/// environment you give the CLI, e.g. the `env` of your options), so the result is
/// the directory that CLI writes to. `None` when neither variable is set.
pub fn config_dir_for_env<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<PathBuf> {
    let mut config = None;
    let mut home = None;
    for (key, value) in env {
        match key {
            "CLAUDE_CONFIG_DIR" => config = Some(value.to_owned()),
            "HOME" => home = Some(value.to_owned()),
            _ => {}
        }
    }
    let config = config.or_else(|| std::env::var("CLAUDE_CONFIG_DIR").ok());
    if let Some(dir) = config.filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = home.or_else(|| std::env::var("HOME").ok());
    home.filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join(".claude"))
}

/// `<config_dir>/projects`: where the CLI keeps transcripts.
pub fn projects_dir(config_dir: impl AsRef<Path>) -> PathBuf {
    config_dir.as_ref().join("projects")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_validate() {
        assert!(SessionKey::new("", "s").is_err());
        assert!(SessionKey::new("p", "").is_err());
        assert!(SessionKey::new("p", "a/b").is_err());
        assert!(SessionKey::new("p", "..").is_err());
        assert!(SessionKey::new("a/b", "s").is_err());
        assert!(SessionKey::new("p", "s\0").is_err());
        let key = SessionKey::new("p", "s").unwrap();
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a/", "x\0"] {
            assert!(key.with_subpath(bad).is_err(), "{bad:?} accepted");
        }
        let sub = key.with_subpath("subagents/agent-1").unwrap();
        assert_eq!(sub.subpath(), Some("subagents/agent-1"));
        assert_eq!(sub.to_string(), "p/s/subagents/agent-1");
        assert!(!sub.is_main());
        assert_eq!(sub.main(), key);
    }

    #[test]
    fn paths_map_to_keys_and_back() {
        let projects = Path::new("/c/projects");
        let main = SessionKey::from_transcript_path("/c/projects/-w/s1.jsonl", projects).unwrap();
        assert_eq!(main, SessionKey::new("-w", "s1").unwrap());
        assert_eq!(
            main.transcript_path(projects, "-w"),
            Path::new("/c/projects/-w/s1.jsonl")
        );
        let sub = SessionKey::from_transcript_path(
            "/c/projects/-w/s1/subagents/agent-a1.jsonl",
            projects,
        )
        .unwrap();
        assert_eq!(sub.subpath(), Some("subagents/agent-a1"));
        assert_eq!(
            sub.transcript_path(projects, "-w"),
            Path::new("/c/projects/-w/s1/subagents/agent-a1.jsonl")
        );
        for outside in [
            "/c/other/-w/s1.jsonl",
            "/c/projects/-w/s1.txt",
            "/c/projects/s1.jsonl",
            "/c/projects/-w/s1/x.jsonl",
            "/c/projects/-w/../s1.jsonl",
        ] {
            assert!(
                SessionKey::from_transcript_path(outside, projects).is_none(),
                "{outside}"
            );
        }
    }

    #[test]
    fn project_keys_follow_the_cli() {
        assert_eq!(
            project_key_for_directory("/tmp/exp/a/cwd"),
            "-tmp-exp-a-cwd"
        );
        assert_eq!(project_key_for_directory("/srv/é"), "-srv--");
        assert_eq!(project_key_for_directory("/srv/😀"), "-srv---");
        // Measured with CLI 2.1.331: a 241-character working directory.
        let long = format!("/tmp/exp/long/{}/{}", "d".repeat(120), "e".repeat(100));
        let key = project_key_for_directory(&long);
        assert!(key.ends_with("-68v2ut"), "{key}");
        assert_eq!(key.len(), 200 + 1 + 6);
    }
}
