//! Producer ids for InitProducerId, allocated monotonically and never reused, across restarts
//! and crashes.
//!
//! Ids are reserved in blocks of [`BLOCK_IDS`]: before the first id of a block is handed out, the
//! end of the block is written durably (a checksummed file replaced atomically, via
//! `storage::checkpoint`). After a `kill -9` the next start begins at the recorded end, so ids of
//! a partly used block are skipped, never handed out twice.
//!
//! Invariants:
//! - every id handed out is below the durably recorded `reserved_end`;
//! - ids only grow; `next <= reserved_end`;
//! - a corrupt file stops the broker at start rather than risk reusing ids.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BrokerError;
use crate::storage::checkpoint;

/// Ids reserved by one durable write.
pub const BLOCK_IDS: i64 = 1000;

const FILE_NAME: &str = "producer-ids";
const KEY: &str = "reserved_end ";

struct Range {
    next: i64,
    reserved_end: i64,
}

pub struct ProducerIds {
    path: PathBuf,
    range: Mutex<Range>,
}

impl ProducerIds {
    /// Opens the allocator of `data_dir`; ids continue after everything ever reserved there.
    pub fn open(data_dir: &Path) -> Result<ProducerIds, BrokerError> {
        let path = data_dir.join(FILE_NAME);
        let bad = |what: String| BrokerError::ProducerIds(format!("{}: {what}", path.display()));
        let reserved_end = match checkpoint::read(&path).map_err(|e| bad(e.to_string()))? {
            None => 0,
            Some(body) => body
                .trim()
                .strip_prefix(KEY)
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad(format!("unreadable contents {body:?}")))?,
        };
        Ok(ProducerIds {
            path,
            range: Mutex::new(Range {
                next: reserved_end,
                reserved_end,
            }),
        })
    }

    /// Whether `id` was ever handed out (or reserved, before a restart, and skipped).
    pub fn is_allocated(&self, id: i64) -> bool {
        let r = self.range.lock().unwrap_or_else(|p| p.into_inner());
        (0..r.next).contains(&id)
    }

    /// A new producer id, durable before it is returned (a block write once per [`BLOCK_IDS`]).
    pub fn allocate(&self) -> Result<i64, BrokerError> {
        let mut r = self.range.lock().unwrap_or_else(|p| p.into_inner());
        if r.next >= r.reserved_end {
            let end = r.reserved_end.checked_add(BLOCK_IDS).ok_or_else(|| {
                BrokerError::ProducerIds("the producer id space is exhausted".into())
            })?;
            checkpoint::write(&self.path, &format!("{KEY}{end}\n"))
                .map_err(|e| BrokerError::ProducerIds(e.to_string()))?;
            r.reserved_end = end;
        }
        let id = r.next;
        r.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_a_restart_never_reuses_one() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.allocate().unwrap(), 0);
        assert_eq!(ids.allocate().unwrap(), 1);
        // A crash: the rest of the block is skipped.
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.allocate().unwrap(), BLOCK_IDS);
        for i in 1..=BLOCK_IDS {
            assert_eq!(ids.allocate().unwrap(), BLOCK_IDS + i);
        }
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.allocate().unwrap(), 3 * BLOCK_IDS);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ProducerIds::open(dir.path()).unwrap().allocate().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "reserved_end 5\ncrc32 00000000\n",
        )
        .unwrap();
        assert!(ProducerIds::open(dir.path()).is_err());
    }
}
