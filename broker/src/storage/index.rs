//! Sparse, memory-mapped indexes of a segment: the offset index (offset → file position) and the
//! time index (max timestamp so far → offset). Both are arrays of fixed-width big-endian entries,
//! in a file `segment.index.bytes` long (sparse: disk blocks are reserved as entries arrive) and
//! trimmed to their entries when the segment is sealed. A sealed index is opened at its trimmed
//! length and never extended, so it stays trimmed for the next start.
//!
//! Invariants (checked by [`Index::check`], which recovery uses to decide to rebuild):
//! - entries are strictly increasing in key (relative offset, or timestamp) and in value;
//! - an offset index never points past its segment's size;
//! - `entries * ENTRY_BYTES <= capacity`; a full index makes the segment roll.

use std::io;
use std::path::Path;

use super::mapped_file::MappedFile;

/// One kind of fixed-width index entry.
pub trait Entry: Copy + std::fmt::Debug {
    const BYTES: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
    /// What lookups search by.
    fn key(&self) -> i64;
    /// The second, also increasing, field: a position or an offset.
    fn value(&self) -> i64;
}

/// Relative offset (to the segment's base) → byte position in the `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const BYTES: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
    fn value(&self) -> i64 {
        i64::from(self.position)
    }
}

/// Largest timestamp seen so far → relative offset of the batch that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const BYTES: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimeEntry {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp_ms
    }
    fn value(&self) -> i64 {
        i64::from(self.relative_offset)
    }
}

pub type OffsetIndex = Index<OffsetEntry>;
pub type TimeIndex = Index<TimeEntry>;

pub struct Index<E: Entry> {
    file: MappedFile,
    entries: usize,
    _entry: std::marker::PhantomData<E>,
}

impl<E: Entry> Index<E> {
    /// Opens an index whose first `entries` slots are trusted (a sealed segment's file length
    /// divided by the entry width, or 0 for one about to be rebuilt).
    pub fn open(path: &Path, capacity_bytes: usize, entries: usize) -> io::Result<Self> {
        let file = MappedFile::open(path, capacity_bytes.max(E::BYTES * (entries + 1)))?;
        file.advise_random()?;
        Ok(Index {
            file,
            entries,
            _entry: std::marker::PhantomData,
        })
    }

    /// Opens a sealed index trusting every whole entry in its file, at its own length: it takes
    /// no appends, and extending it would make the next open trust the zeroes past its entries.
    pub fn open_sealed(path: &Path) -> io::Result<Self> {
        let len = std::fs::metadata(path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let file = MappedFile::open(path, len)?;
        file.advise_random()?;
        Ok(Index {
            file,
            entries: len / E::BYTES,
            _entry: std::marker::PhantomData,
        })
    }

    /// Opens a sealed index again (its segment's files were released) expecting exactly
    /// `entries` whole entries, as when it was closed: a missing or changed file is an error.
    pub fn open_existing(path: &Path, entries: usize) -> io::Result<Self> {
        let file = MappedFile::open_existing(path, entries * E::BYTES)?;
        if file.capacity_bytes() / E::BYTES != entries {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} bytes, expected {entries} entries",
                    path.display(),
                    file.capacity_bytes()
                ),
            ));
        }
        if entries > 0 {
            file.advise_random()?;
        }
        Ok(Index {
            file,
            entries,
            _entry: std::marker::PhantomData,
        })
    }

    /// Reserves disk blocks for `more` entries past the current ones (as far as capacity allows),
    /// so that appending them cannot fail for want of space.
    pub fn reserve_entries(&self, more: usize) -> io::Result<()> {
        let end = ((self.entries + more) * E::BYTES).min(self.file.capacity_bytes());
        self.file.reserve(end)
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn is_full(&self) -> bool {
        (self.entries + 1) * E::BYTES > self.file.capacity_bytes()
    }

    pub fn entry(&self, i: usize) -> E {
        assert!(i < self.entries);
        E::decode(self.file.slice(i * E::BYTES, E::BYTES))
    }

    pub fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry; the caller keeps keys and values increasing and checks `is_full` first.
    pub fn append(&mut self, e: E) -> io::Result<()> {
        assert!(!self.is_full(), "index full");
        if let Some(last) = self.last() {
            assert!(
                e.key() > last.key() && e.value() >= last.value(),
                "index out of order: {last:?} then {e:?}"
            );
        }
        let mut buf = [0u8; 16];
        e.encode(&mut buf[..E::BYTES]);
        self.file
            .write_at(self.entries * E::BYTES, &buf[..E::BYTES])?;
        self.entries += 1;
        Ok(())
    }

    /// The last entry whose key is `<= key`.
    pub fn floor(&self, key: i64) -> Option<E> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).key() <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Forgets every entry (before a rebuild) or those past `keep`.
    pub fn truncate_entries(&mut self, keep: usize) {
        self.entries = self.entries.min(keep);
    }

    /// Checks the ordering invariant and that values stay below `value_limit`.
    pub fn check(&self, value_limit: i64) -> Result<(), String> {
        let mut prev: Option<E> = None;
        for i in 0..self.entries {
            let e = self.entry(i);
            if e.value() > value_limit {
                return Err(format!("entry {i} {e:?} points past {value_limit}"));
            }
            if let Some(p) = prev {
                if e.key() <= p.key() || e.value() < p.value() {
                    return Err(format!("entry {i} {e:?} is out of order after {p:?}"));
                }
            }
            prev = Some(e);
        }
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.flush_range(0, self.entries * E::BYTES)
    }

    /// Shrinks the file to exactly its entries (sealed segment or clean shutdown).
    pub fn trim(&self) -> io::Result<()> {
        self.flush()?;
        self.file.trim(self.entries * E::BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_the_last_entry_not_above_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("i"), 800, 0).unwrap();
        assert!(idx.floor(5).is_none());
        for i in 0..10u32 {
            idx.append(OffsetEntry {
                relative_offset: i * 10,
                position: i * 100,
            })
            .unwrap();
        }
        assert_eq!(idx.floor(0).unwrap().position, 0);
        assert_eq!(
            idx.floor(25).unwrap(),
            OffsetEntry {
                relative_offset: 20,
                position: 200
            }
        );
        assert_eq!(idx.floor(1000).unwrap().relative_offset, 90);
        idx.check(900).unwrap();
        assert!(idx.check(899).is_err());
    }

    #[test]
    fn a_trimmed_index_reopens_with_its_entries_and_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut idx = TimeIndex::open(&path, 36, 0).unwrap();
        idx.append(TimeEntry {
            timestamp_ms: 5,
            relative_offset: 0,
        })
        .unwrap();
        idx.append(TimeEntry {
            timestamp_ms: 9,
            relative_offset: 3,
        })
        .unwrap();
        idx.trim().unwrap();
        drop(idx);
        let idx = TimeIndex::open_sealed(&path).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.floor(8).unwrap().relative_offset, 0);
        assert!(idx.is_full(), "a sealed index takes no appends");
        drop(idx);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            24,
            "opening a sealed index leaves it trimmed"
        );
        let mut idx = TimeIndex::open(&path, 36, 2).unwrap();
        idx.append(TimeEntry {
            timestamp_ms: 10,
            relative_offset: 4,
        })
        .unwrap();
        assert!(idx.is_full());
    }

    #[test]
    fn an_index_holds_disk_for_its_entries_not_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut idx = OffsetIndex::open(&path, 10 << 20, 0).unwrap();
        idx.reserve_entries(1).unwrap();
        idx.append(OffsetEntry {
            relative_offset: 0,
            position: 0,
        })
        .unwrap();
        let used = disk_bytes(&path);
        assert!(used <= 64 << 10, "one entry holds {used} bytes of disk");
    }

    fn disk_bytes(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }
}
