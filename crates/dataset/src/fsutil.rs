//! Atomic file writes: the one implementation every deeprecog writer uses (images, caches,
//! annotation files, reports, converted weights, checkpoints).
//!
//! A write goes to a temporary file in the destination's folder (so the final rename never
//! crosses file systems), is flushed to disk (`fsync`), gets ordinary permissions (`0644` on
//! Unix, where temporary files start private) and is renamed over the destination. A crash or
//! an error therefore leaves either the old file or the complete new one, never a truncated
//! file under the final name; the temporary file is removed on failure. Missing parent
//! folders are created.
//!
//! ```
//! use deeprecog_dataset::fsutil::{write_atomically, write_atomically_with};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("nested/run.json");
//! write_atomically(&path, b"{\"epochs\": 3}")?;
//! assert_eq!(std::fs::read(&path)?, b"{\"epochs\": 3}");
//!
//! // A writer that insists on a path of its own (candle's safetensors `save`, a PNG encoder
//! // that opens the file itself) writes the temporary file instead.
//! write_atomically_with(&path, |tmp| std::fs::write(tmp, b"{}"))?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// A boxed error from a writer closure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an atomic write failed; always names the destination file.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// Creating the folder or the temporary file, writing, syncing, setting permissions or
    /// renaming failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The destination file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The closure given to [`write_atomically_with`] failed.
    #[error("{}: {source}", path.display())]
    Writer {
        /// The destination file.
        path: PathBuf,
        /// The writer's error.
        source: BoxError,
    },
}

impl AtomicWriteError {
    /// The destination file that was not written.
    pub fn path(&self) -> &Path {
        match self {
            AtomicWriteError::Io { path, .. } | AtomicWriteError::Writer { path, .. } => path,
        }
    }

    /// The error without the path, for callers that attach the path themselves.
    pub fn into_source(self) -> BoxError {
        match self {
            AtomicWriteError::Io { source, .. } => Box::new(source),
            AtomicWriteError::Writer { source, .. } => source,
        }
    }
}

/// Writes `bytes` to `path` atomically (see the [module docs](self)).
///
/// # Errors
/// [`AtomicWriteError::Io`] naming `path` when any step fails; `path` is then unchanged.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomically_with(path, |tmp| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(tmp)?;
        file.write_all(bytes)?;
        file.flush()
    })
}

/// Lets `write` fill a temporary file in `path`'s folder (it receives the temporary path and
/// may truncate or recreate that file), then syncs it and renames it to `path`, atomically
/// (see the [module docs](self)).
///
/// # Errors
/// [`AtomicWriteError::Writer`] when `write` fails, [`AtomicWriteError::Io`] when a file-system
/// step fails; both name `path`, which is then unchanged.
pub fn write_atomically_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicWriteError>
where
    E: Into<BoxError>,
{
    let io = |source: std::io::Error| AtomicWriteError::Io { path: path.to_path_buf(), source };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(parent)
        .map_err(io)?;
    write(tmp.path())
        .map_err(|e| AtomicWriteError::Writer { path: path.to_path_buf(), source: e.into() })?;
    // The writer may have replaced the file behind the path: sync what the path holds now.
    std::fs::File::open(tmp.path()).and_then(|f| f.sync_all()).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable; not every platform can open a folder, so best effort.
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect()
    }

    #[test]
    fn writes_replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"2nd").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"2nd");
        assert!(leftovers(&dir.path().join("a/b")).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        write_atomically(&path, b"old").unwrap();
        let err = write_atomically_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err::<(), BoxError>("encoder gave up".into())
        })
        .unwrap_err();
        assert!(matches!(err, AtomicWriteError::Writer { .. }));
        assert_eq!(err.path(), path);
        let msg = err.to_string();
        assert!(msg.contains("weights.safetensors") && msg.contains("encoder gave up"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_writer_that_recreates_its_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        write_atomically_with(&path, |tmp| {
            std::fs::remove_file(tmp)?;
            std::fs::write(tmp, b"fresh")
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"fresh");
    }

    #[test]
    fn io_errors_name_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a folder is needed.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("out.json");
        let err = write_atomically(&path, b"{}").unwrap_err();
        assert!(matches!(err, AtomicWriteError::Io { .. }));
        assert!(err.to_string().contains("out.json"), "{err}");
    }
}
