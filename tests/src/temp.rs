//! Temporary files and directories under /tmp (configs, token files,
//! scenario files, a Python client's working directory), named after the
//! test and this process so parallel tests never share one, and removed on
//! drop.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// Makes socket and file names unique between the threads of one binary.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A path under /tmp unique to this process and call: `fbt-<tag>-<pid>-<n><suffix>`.
pub fn temp_path(tag: &str, suffix: &str) -> PathBuf {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/tmp/fbt-{tag}-{}-{n}{suffix}", std::process::id()))
}

/// A file under /tmp removed on drop (configs, token files, trafgen configs).
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `contents` to a fresh `/tmp/fbt-<tag>-..<suffix>`, mode 0600.
    pub fn new(tag: &str, suffix: &str, contents: &str) -> Self {
        let file = TempFile {
            path: temp_path(tag, suffix),
        };
        file.write(contents);
        file
    }

    /// Replaces the contents (atomically, by rename, as an editor would).
    pub fn write(&self, contents: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("partial");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
        f.write_all(contents.as_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a `&str`, for command lines.
    pub fn as_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A directory under /tmp, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/fbt-<tag>-<pid>-<n>/`, mode 0755.
    pub fn new(tag: &str) -> Self {
        let path = temp_path(tag, "");
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self/name` as a string, for command lines.
    pub fn join(&self, name: &str) -> String {
        self.path.join(name).to_str().unwrap().to_string()
    }

    /// Writes `self/name`; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {p}: {e}"));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
