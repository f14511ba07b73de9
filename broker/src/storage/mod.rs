//! Durable storage of partition logs, per DESIGN.md: a directory per partition holding segments
//! (`.log` memory-mapped and preallocated, sparse `.index`, `.timeindex`), plus the small
//! checksummed checkpoint files the broker keeps beside them.
//!
//! - [`mapped_file`]: a preallocated, memory-mapped file; zero-copy slices for readers.
//! - [`index`]: the offset and time indexes.
//! - [`segment`]: one `.log` with its indexes: append, read, seal, recover.
//! - [`log`]: the ordered segments of a partition: roll, read, retention, recovery on open.
//! - [`open_segments`]: the broker-wide bound on sealed segments holding open files.
//! - [`checkpoint`]: atomic, checksummed small files.

pub mod checkpoint;
pub mod fatal;
pub mod index;
pub mod log;
pub mod mapped_file;
pub mod open_segments;
pub mod segment;
#[cfg(test)]
pub mod sim_disk;

pub use self::log::{Log, LogConfig, LogReadError, OffsetOutOfRange, RecoveryReport};
pub use open_segments::OpenSegments;
pub use segment::SegmentLimits;

/// Makes `dir`'s entries durable: a created, renamed or removed file survives a power cut only
/// once its directory is synced.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?
        .sync_all()
        .map_err(fatal::sync_failed)?;
    #[cfg(test)]
    sim_disk::synced_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests;
