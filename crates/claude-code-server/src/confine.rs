//! Keeping tool paths inside the project root.
//!
//! A path is inside when it stays under the (canonical) project root both ways it can
//! be read: as the CLI resolves it (relative to the run's working directory, `..`
//! folded lexically, as Node's `path.resolve` does) and as the kernel resolves it
//! (symlinks followed first). For each reading, the longest prefix that exists is
//! canonicalized (so symlinks count) and the rest appended; a rest that contains `..`,
//! a dangling symlink, a path starting with `~`, and an empty path are never inside.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// The input fields that name a file or directory, by tool. `None`: the server cannot
/// tell what the tool touches (Bash, MCP tools, ...).
pub(crate) fn path_fields(tool: &str) -> Option<&'static [&'static str]> {
    match tool {
        "Read" | "Write" | "Edit" | "MultiEdit" => Some(&["file_path"]),
        "NotebookEdit" => Some(&["notebook_path"]),
        "Grep" | "Glob" => Some(&["path"]),
        "LSP" => Some(&["filePath"]),
        _ => None,
    }
}

/// Whether a tool that writes (`Write`, `Edit`, `MultiEdit`, `NotebookEdit`) would
/// change how later runs of the project are configured: a file under a `.claude`
/// directory (settings with hooks and permission rules, agents, commands, skills) or a
/// `.mcp.json` (MCP servers the CLI starts). A run in `acceptEdits` writes inside the
/// project without asking; these writes are put to a person instead, so a prompt cannot
/// plant a hook or an allow rule that a later run obeys.
pub(crate) fn configures_the_cli(cwd: &Path, tool: &str, input: &Value) -> Vec<String> {
    if !matches!(tool, "Write" | "Edit" | "MultiEdit" | "NotebookEdit") {
        return Vec::new();
    }
    path_fields(tool)
        .unwrap_or(&[])
        .iter()
        .filter_map(|field| input.get(*field).and_then(Value::as_str))
        .filter(|path| {
            let full = cwd.join(path);
            [Some(lexical(&full)), resolve(&full)]
                .iter()
                .flatten()
                .any(|p| {
                    p.components().any(|c| c.as_os_str() == ".claude")
                        || p.file_name().is_some_and(|n| n == ".mcp.json")
                })
        })
        .map(str::to_owned)
        .collect()
}

/// Whether `path` (absolute, or relative to `cwd`) stays inside `root` (canonical).
pub(crate) fn is_inside(root: &Path, cwd: &Path, path: &str) -> bool {
    if path.is_empty() || path.starts_with('~') || path.contains('\0') {
        return false;
    }
    let full = cwd.join(path);
    [resolve(&lexical(&full)), resolve(&full)]
        .iter()
        .all(|resolved| resolved.as_ref().is_some_and(|p| p.starts_with(root)))
}

/// `..` and `.` folded without looking at the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The canonical longest existing prefix of `path`, with the rest appended.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        // `symlink_metadata`: a dangling symlink exists (and fails to canonicalize).
        if existing.symlink_metadata().is_ok() {
            break;
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
    let mut resolved = existing.canonicalize().ok()?;
    // `file_name` is `None` for a path ending in `..`, so the rest is plain names.
    for name in rest.iter().rev() {
        resolved.push(name);
    }
    Some(resolved)
}

/// Why a rewritten tool input is refused, or `Ok` when the server can vouch for it.
pub(crate) fn check_rewrite(
    root: &Path,
    cwd: &Path,
    tool: &str,
    original: &Value,
    rewritten: &Value,
) -> Result<(), String> {
    let Some(fields) = path_fields(tool) else {
        return if rewritten == original {
            Ok(())
        } else {
            Err(format!(
                "the server cannot check what a rewritten {tool} input would touch: \
                 approve it unchanged, without `updated_input`, or deny it"
            ))
        };
    };
    let Some(object) = rewritten.as_object() else {
        return Err(format!("`updated_input` for {tool} must be an object"));
    };
    for field in fields {
        match object.get(*field) {
            None if tool == "Grep" || tool == "Glob" => {}
            None => return Err(format!("`updated_input.{field}` is missing")),
            Some(Value::String(path)) if is_inside(root, cwd, path) => {}
            Some(Value::String(_)) => {
                return Err(format!(
                    "`updated_input.{field}` must be a path inside the project root"
                ));
            }
            Some(_) => return Err(format!("`updated_input.{field}` must be a string")),
        }
    }
    // A glob pattern is a path too: relative, with no way up.
    if tool == "Glob"
        && object.get("pattern") != original.get("pattern")
        && let Some(pattern) = object.get("pattern")
    {
        let ok = pattern.as_str().is_some_and(|p| {
            !p.starts_with('/')
                && !p.starts_with('~')
                && !Path::new(p).components().any(|c| c == Component::ParentDir)
        });
        if !ok {
            return Err(
                "`updated_input.pattern` must be a relative pattern without `..`".to_owned(),
            );
        }
    }
    Ok(())
}

/// The paths a permission request is about that lie outside the project root: the
/// tool input's path fields and the CLI's `blocked_path`.
pub(crate) fn outside_paths(
    root: &Path,
    cwd: &Path,
    tool: &str,
    input: &Value,
    blocked_path: Option<&str>,
) -> Vec<String> {
    let mut outside = Vec::new();
    let from_input = path_fields(tool)
        .unwrap_or(&[])
        .iter()
        .filter_map(|field| input.get(*field).and_then(Value::as_str));
    for path in from_input.chain(blocked_path) {
        if !is_inside(root, cwd, path) {
            outside.push(path.to_owned());
        }
    }
    outside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::os::unix::fs::symlink(base.join("out"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(base.join("gone"), root.join("dangling")).unwrap();
        let inside = |p: &str| is_inside(&root, &root.join("sub"), p);
        assert!(inside("a.txt"));
        assert!(inside("../b.txt"));
        assert!(inside("new/dir/c.txt"));
        assert!(inside(&root.join("x").display().to_string()));
        assert!(!inside("../../x"));
        assert!(!inside("/etc/passwd"));
        assert!(!inside("~/x"));
        assert!(!inside(""));
        assert!(!inside("../link/x"));
        assert!(!inside("../link/new/x"));
        assert!(!inside("../dangling"));
        assert!(!inside("../dangling/x"));
        assert!(!inside("nope/../../../x"));
        // Lexically inside, but the kernel would follow the link first.
        assert!(!inside("../link/../x"));
    }
}
