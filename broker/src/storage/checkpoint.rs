//! Small files the broker owns (recovery points, topic metadata, leader-epoch cache): text with a
//! CRC-32 trailer, replaced atomically (write temp, fsync, rename, fsync dir).
//!
//! Invariant: a reader sees either the previous complete file or the new complete file; a file
//! whose trailer does not match its body is reported as corrupt, never half-used.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const TRAILER: &str = "crc32 ";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: checksum mismatch or missing trailer; the file is corrupt")]
    Corrupt { path: String },
}

impl CheckpointError {
    /// Whether a sync failed (see [`super::fatal`]): the broker must halt.
    pub fn is_fatal(&self) -> bool {
        matches!(self, CheckpointError::Io { source, .. } if super::fatal::is_fatal(source))
    }
}

/// Replaces `path` with `body` atomically and durably.
pub fn write(path: &Path, body: &str) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    };
    // Each writer its own temp file: two writers of one checkpoint never tear each other's.
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.{n}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err)?;
    #[cfg(test)]
    super::sim_disk::created(&tmp);
    let crc = crc32fast::hash(body.as_bytes());
    f.write_all(body.as_bytes()).map_err(io_err)?;
    f.write_all(format!("{TRAILER}{crc:08x}\n").as_bytes())
        .map_err(io_err)?;
    f.sync_all()
        .map_err(|e| io_err(super::fatal::sync_failed(e)))?;
    #[cfg(test)]
    super::sim_disk::synced_file(&tmp);
    fs::rename(&tmp, path).map_err(io_err)?;
    #[cfg(test)]
    super::sim_disk::renamed(&tmp, path);
    if let Some(dir) = path.parent() {
        super::sync_dir(dir).map_err(io_err)?;
    }
    Ok(())
}

/// Reads a file written by [`write`]: `Ok(None)` if it does not exist.
pub fn read(path: &Path) -> Result<Option<String>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let corrupt = || CheckpointError::Corrupt {
        path: path.display().to_string(),
    };
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let (body, trailer) = text.split_at(body_end);
    let stored = trailer.trim().strip_prefix(TRAILER).ok_or_else(corrupt)?;
    let stored = u32::from_str_radix(stored, 16).map_err(|_| corrupt())?;
    if stored != crc32fast::hash(body.as_bytes()) {
        return Err(corrupt());
    }
    Ok(Some(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        assert!(read(&path).unwrap().is_none());
        write(&path, "a 1\nb 2\n").unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), "a 1\nb 2\n");
        write(&path, "").unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), "");
        write(&path, "a 1\n").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] = b'z';
        fs::write(&path, bytes).unwrap();
        assert!(matches!(read(&path), Err(CheckpointError::Corrupt { .. })));
        fs::write(&path, "no trailer\n").unwrap();
        assert!(matches!(read(&path), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn two_writers_of_one_checkpoint_never_tear_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        std::thread::scope(|scope| {
            for w in 0..2 {
                let path = &path;
                scope.spawn(move || {
                    let body = format!("writer {w}\n").repeat(2000);
                    for _ in 0..100 {
                        write(path, &body).unwrap();
                        assert!(read(path).unwrap().is_some());
                    }
                });
            }
        });
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temp files left behind");
    }
}
