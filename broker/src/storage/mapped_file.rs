//! A file mapped into memory with a fixed capacity, written at an append position and read as
//! zero-copy [`Bytes`] slices.
//!
//! Segment data is written with `pwritev` (one copy, from the request buffer into the page
//! cache) and read through the mapping, which sees the same page cache. Writing through the
//! mapping instead costs a page fault per page, and on a sparse file each fault zero-fills a whole
//! readahead window: measured at two thirds of the broker's CPU under load. The small index files
//! are written through their mapping, with readahead turned off (`advise_random`).
//!
//! Invariants:
//! - writes happen only at positions the single writer (the partition, under its lock) owns, at or
//!   beyond every position a reader was handed; bytes handed to a reader are never written again
//!   while the file is mapped, so a reader's slice never changes under it;
//! - every access is inside `[0, capacity)`; the file is at least `capacity` bytes long while
//!   anything beyond its trimmed length could be touched (see [`MappedFile::trim`]);
//! - the mapping lives as long as the longest-held slice (`Bytes::from_owner` keeps an `Arc`);
//! - the file has its full capacity as a sparse length, and disk blocks are reserved (fallocate)
//!   ahead of every write, so a full disk is an `io::Error` on append, never a SIGBUS in a page
//!   fault. The reservation ahead grows with what the file holds (as much again, between
//!   [`RESERVE_MIN_BYTES`] and [`RESERVE_MAX_BYTES`]), so an idle or lightly used partition holds
//!   kilobytes of disk, and a busy one still reserves rarely;
//! - a failed reservation has written nothing: it is reported as a [`ReservationFailed`] error
//!   (see [`is_reservation_failure`]), which callers treat as "disk full, try again later", not as
//!   a lost write.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    capacity_bytes: usize,
    /// Bytes from the start with disk blocks reserved.
    reserved_bytes: AtomicUsize,
}

/// Most iovecs one `pwritev` takes (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Least disk reserved ahead of a write: one page, so an index or a small log costs a page.
pub const RESERVE_MIN_BYTES: usize = 4 << 10;
/// Most disk reserved ahead of a write (a busy segment reserves in chunks this big).
pub const RESERVE_MAX_BYTES: usize = 16 << 20;

/// Reserving disk blocks failed (typically ENOSPC or EDQUOT): nothing of the write that needed
/// them was written, so the file is as it was. Carried inside the `io::Error` (same kind as the
/// OS error) so that callers can tell a full disk from a failed write.
#[derive(Debug)]
pub struct ReservationFailed {
    pub source: io::Error,
}

impl std::fmt::Display for ReservationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reserve disk space: {}", self.source)
    }
}

impl std::error::Error for ReservationFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether the last reservation failed: a full disk is logged once when it starts and once when
/// it ends, not per refused write. (One data directory per process.)
static DISK_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `e` is a failed reservation: nothing was written, the write may be retried later.
pub fn is_reservation_failure(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ReservationFailed>())
}

// SAFETY: the raw mapping is shared memory; the invariants above (one writer at disjoint,
// not-yet-published positions) make concurrent access sound.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Opens (creating if needed) `path`, makes it at least `capacity_bytes` long (sparse) and
    /// maps it.
    pub fn open(path: &Path, capacity_bytes: usize) -> io::Result<MappedFile> {
        #[cfg(test)]
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        #[cfg(test)]
        if !existed {
            super::sim_disk::created(path);
        }
        let len = file.metadata()?.len() as usize;
        let capacity_bytes = capacity_bytes.max(len).max(1);
        if len < capacity_bytes {
            file.set_len(capacity_bytes as u64)?;
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            file,
            map,
            capacity_bytes,
            reserved_bytes: AtomicUsize::new(0),
        })
    }

    /// Opens an existing file that must hold at least `min_len` bytes (a sealed segment's, opened
    /// again on demand), mapped at its length and never extended: a missing or short file is an
    /// error, not a new file.
    pub fn open_existing(path: &Path, min_len: usize) -> io::Result<MappedFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < min_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {len} bytes, expected at least {min_len}",
                    path.display()
                ),
            ));
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            file,
            map,
            capacity_bytes: len,
            reserved_bytes: AtomicUsize::new(len),
        })
    }

    /// Makes sure disk blocks back `[0, end)`, reserving ahead as much again as the file will
    /// hold (bounded by [`RESERVE_MIN_BYTES`] and [`RESERVE_MAX_BYTES`]).
    pub fn reserve(&self, end: usize) -> io::Result<()> {
        let reserved = self.reserved_bytes.load(Ordering::Relaxed);
        if end <= reserved {
            return Ok(());
        }
        let ahead = end.clamp(RESERVE_MIN_BYTES, RESERVE_MAX_BYTES);
        let target = end.saturating_add(ahead).min(self.capacity_bytes).max(end);
        if let Err(source) = reserve_blocks(&self.file, reserved, target) {
            if !DISK_FULL.swap(true, Ordering::Relaxed) {
                tracing::error!(file = %self.path.display(), error = %source, "no disk space for writes: produces are refused with KAFKA_STORAGE_ERROR until space returns; reads go on");
            }
            return Err(io::Error::new(source.kind(), ReservationFailed { source }));
        }
        if DISK_FULL.swap(false, Ordering::Relaxed) {
            tracing::info!(file = %self.path.display(), "disk space available again: writes resume");
        }
        self.reserved_bytes.store(target, Ordering::Relaxed);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Copies `bytes` to `position`. The caller is the single writer and `position` is beyond
    /// every byte handed to a reader. Fails only if the disk has no room for the blocks.
    pub fn write_at(&self, position: usize, bytes: &[u8]) -> io::Result<()> {
        assert!(
            position + bytes.len() <= self.capacity_bytes,
            "write past the mapping"
        );
        self.reserve(position + bytes.len())?;
        // SAFETY: in bounds (asserted); the range is not aliased by any reader (module invariant).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(position),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Writes `bufs` back to back at `position` through the file (not the mapping); the mapping
    /// sees the bytes at once. Same ownership rules as [`MappedFile::write_at`].
    pub fn write_vectored_at(&self, position: usize, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        assert!(
            position + total <= self.capacity_bytes,
            "write past the mapping"
        );
        self.reserve(position + total)?;
        let mut written = 0usize;
        let mut first = 0usize; // index of the first buffer not fully written
        let mut skip = 0usize; // bytes of bufs[first] already written
        while written < total {
            let iov: Vec<libc::iovec> = bufs[first..]
                .iter()
                .take(IOV_MAX)
                .enumerate()
                .map(|(i, b)| {
                    let from = if i == 0 { skip } else { 0 };
                    libc::iovec {
                        iov_base: b[from..].as_ptr() as *mut libc::c_void,
                        iov_len: b.len() - from,
                    }
                })
                .collect();
            // SAFETY: the iovecs point into live borrowed buffers; the fd is open.
            let n = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    (position + written) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The blocks were reserved: a failure now is not a full disk (see `fatal`).
                return Err(super::fatal::sync_failed(e));
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            written += n as usize;
            let mut n = n as usize;
            while n > 0 {
                let left = bufs[first].len() - skip;
                if n >= left {
                    n -= left;
                    first += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    /// Turns off readahead for this mapping: for files written through the mapping in small
    /// pieces (indexes), so a fault maps one page instead of zero-filling a window.
    pub fn advise_random(&self) -> io::Result<()> {
        self.map.advise(memmap2::Advice::Random)
    }

    /// A read-only view of `[position, position + len)`.
    pub fn slice(&self, position: usize, len: usize) -> &[u8] {
        assert!(
            position + len <= self.capacity_bytes,
            "read past the mapping"
        );
        // SAFETY: in bounds; published bytes are never written again (module invariant).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(position), len) }
    }

    /// A zero-copy slice that keeps the mapping alive while it is held.
    pub fn bytes(self: &Arc<Self>, position: usize, len: usize) -> Bytes {
        assert!(
            position + len <= self.capacity_bytes,
            "read past the mapping"
        );
        Bytes::from_owner(MappedSlice {
            file: Arc::clone(self),
            position,
            len,
        })
    }

    /// Writes `[position, position + len)` to disk and waits for it (msync).
    pub fn flush_range(&self, position: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        #[cfg(test)]
        if super::sim_disk::sync_fails(&self.path) {
            return Err(super::fatal::sync_failed(io::Error::other(
                "injected msync failure",
            )));
        }
        if super::fatal::injected_sync_failure(&self.path) {
            return Err(super::fatal::sync_failed(io::Error::other(format!(
                "msync failure injected by {}",
                super::fatal::FAIL_SYNCS_ENV
            ))));
        }
        self.map
            .flush_range(position, len)
            .map_err(super::fatal::sync_failed)?;
        #[cfg(test)]
        super::sim_disk::synced_range(&self.path, position, len);
        Ok(())
    }

    /// Zeroes `[from, capacity)` on disk, durably (recovery cut a torn tail there: its bytes must
    /// never again look like data after a later, shorter append). Blocks past `from` are
    /// reserved again by the next write.
    pub fn zero_tail(&self, from: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = self.capacity_bytes.saturating_sub(from);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: plain syscall on an open descriptor.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            // No hole punching here: write the zeroes.
            use std::os::unix::fs::FileExt;
            let zeroes = vec![0u8; 64 << 10];
            let mut at = from;
            while at < self.capacity_bytes {
                let n = zeroes.len().min(self.capacity_bytes - at);
                self.file.write_all_at(&zeroes[..n], at as u64)?;
                at += n;
            }
        }
        self.reserved_bytes.fetch_min(from, Ordering::Relaxed);
        self.file.sync_all().map_err(super::fatal::sync_failed)?;
        #[cfg(test)]
        super::sim_disk::synced_file(&self.path);
        Ok(())
    }

    /// Shrinks the file on disk to `len` bytes (a sealed segment, or a clean shutdown). The mapping
    /// keeps its size; nothing at or past `len` is touched again.
    pub fn trim(&self, len: usize) -> io::Result<()> {
        self.file.set_len(len as u64)?;
        // Blocks past `len` went with the truncation.
        self.reserved_bytes.fetch_min(len, Ordering::Relaxed);
        self.file.sync_all().map_err(super::fatal::sync_failed)?;
        #[cfg(test)]
        super::sim_disk::synced_file(&self.path);
        Ok(())
    }
}

struct MappedSlice {
    file: Arc<MappedFile>,
    position: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        self.file.slice(self.position, self.len)
    }
}

fn reserve_blocks(file: &File, from: usize, to: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe {
        libc::posix_fallocate(
            file.as_raw_fd(),
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    match rc {
        // Filesystems without fallocate keep the sparse file; a full disk there is a SIGBUS risk.
        0 | libc::EOPNOTSUPP => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_visible_through_slices_that_outlive_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(MappedFile::open(&dir.path().join("a"), 4096).unwrap());
        f.write_at(10, b"hello").unwrap();
        let b = f.bytes(10, 5);
        drop(f);
        assert_eq!(&b[..], b"hello");
    }

    #[test]
    fn vectored_writes_land_in_order_and_show_through_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let f = MappedFile::open(&dir.path().join("v"), 1 << 20).unwrap();
        let parts: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        f.write_vectored_at(100, &slices).unwrap();
        let expected: Vec<u8> = parts.concat();
        assert_eq!(f.slice(100, expected.len()), &expected[..]);
    }

    #[test]
    fn reopening_keeps_data_and_trim_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let f = MappedFile::open(&path, 4096).unwrap();
        f.write_at(0, b"abc").unwrap();
        f.flush_range(0, 3).unwrap();
        f.trim(3).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3);
        let f = MappedFile::open(&path, 8192).unwrap();
        assert_eq!(f.slice(0, 3), b"abc");
        assert_eq!(f.capacity_bytes(), 8192);
    }
}
