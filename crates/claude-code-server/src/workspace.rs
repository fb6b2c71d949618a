//! Which storage a project root is: a marker file with a random id, written once.
//!
//! Replicas whose project roots carry the same marker share the files (one host, or a
//! root on shared storage): a session may move between them. A session started on a
//! root with another marker is refused (`409 workspace_moved`) instead of running,
//! silently, in a directory that does not hold its files.

use std::path::Path;

/// The marker's file name, in the project root.
pub(crate) const MARKER: &str = ".claude-code-server.workspace";

/// A project root's identity.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    id: String,
}

impl Workspace {
    /// Reads the root's marker, writing one first if there is none.
    ///
    /// # Errors
    ///
    /// When the marker cannot be read or written.
    pub(crate) fn load(root: &Path) -> std::io::Result<Workspace> {
        let path = root.join(MARKER);
        if let Ok(id) = std::fs::read_to_string(&path) {
            let id = id.trim().to_owned();
            if !id.is_empty() {
                return Ok(Workspace { id });
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        // Created exclusively: two replicas starting together agree on one id.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(id.as_bytes())?;
                Ok(Workspace { id })
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let id = std::fs::read_to_string(&path)?.trim().to_owned();
                Ok(Workspace { id })
            }
            Err(err) => Err(err),
        }
    }

    /// The marker's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Why a session may not run here, if it may not: it was started on a project root
    /// with another marker.
    pub(crate) fn refuses(&self, session: &crate::fleet::db::SessionRow) -> Option<String> {
        match &session.workspace {
            Some(theirs) if *theirs != self.id => Some(format!(
                "session {} was started on a project root this replica does not share (its \
                 files are not here); put the project root on storage every replica shares, \
                 or continue the session on a replica that has it",
                session.id
            )),
            _ => None,
        }
    }
}
