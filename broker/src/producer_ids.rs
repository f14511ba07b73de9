//! Producer ids for InitProducerId, handed out from blocks the controller allocates
//! (`MetadataRecord::ProducerIds`, Kafka's AllocateProducerIds shape): a block is committed to
//! the metadata log before any id of it is used, and blocks only move forward, so no id is ever
//! handed out twice in the cluster, across restarts and crashes (a restart takes a new block and
//! skips what was left of the old one).
//!
//! Before the quorum, a single node reserved ids in `<data>/producer-ids`; the upgrade reads its
//! end ([`legacy_reserved_end`]) and the first block covers everything below it.
//!
//! Invariants:
//! - every id handed out is in a block committed to this broker;
//! - ids this broker hands out only grow.

use std::path::Path;

use crate::controller::image::MetadataImage;
use crate::controller::records::{MetadataRecord, ProducerIdBlock};
use crate::error::BrokerError;
use crate::ids::BrokerId;
use crate::storage::checkpoint;

/// Ids in one block the controller hands out.
pub const BLOCK_IDS: i64 = 1000;
/// Attempts at taking a block when other brokers take theirs at the same time.
const BLOCK_ATTEMPTS_MAX: usize = 10;

const LEGACY_FILE_NAME: &str = "producer-ids";
const LEGACY_KEY: &str = "reserved_end ";

/// The end of what a single node reserved in `<data>/producer-ids` (0 without the file).
pub fn legacy_reserved_end(data_dir: &Path) -> Result<i64, BrokerError> {
    let path = data_dir.join(LEGACY_FILE_NAME);
    let bad = |what: String| BrokerError::ProducerIds(format!("{}: {what}", path.display()));
    match checkpoint::read(&path).map_err(|e| bad(e.to_string()))? {
        None => Ok(0),
        Some(body) => body
            .trim()
            .strip_prefix(LEGACY_KEY)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(format!("unreadable contents {body:?}"))),
    }
}

/// This broker's current block: ids `[next, end)` are still free.
#[derive(Default)]
struct Block {
    next: i64,
    end: i64,
}

pub struct ProducerIds {
    me: BrokerId,
    /// An async mutex: taking a new block waits on the controller, and callers queue behind it.
    block: tokio::sync::Mutex<Block>,
}

impl ProducerIds {
    /// An allocator for broker `me`; it takes its first block on the first allocation.
    pub fn new(me: BrokerId) -> ProducerIds {
        ProducerIds {
            me,
            block: tokio::sync::Mutex::new(Block::default()),
        }
    }

    /// Whether `id` was ever handed out by any broker (or reserved, and skipped).
    pub fn is_allocated(image: &MetadataImage, id: i64) -> bool {
        (0..image.producer_id_high_mark()).contains(&id)
    }

    /// A new producer id, from a block committed to this broker.
    pub async fn allocate(
        &self,
        controller: &crate::controller::member::Controller,
    ) -> Result<i64, BrokerError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let mut attempts = 0;
            let taken = loop {
                let first_id = controller.image().producer_id_high_mark();
                let end = first_id.checked_add(BLOCK_IDS).ok_or_else(|| {
                    BrokerError::ProducerIds("the producer id space is exhausted".into())
                })?;
                let record = MetadataRecord::ProducerIds(ProducerIdBlock {
                    broker: self.me,
                    first_id,
                    size: BLOCK_IDS,
                });
                match controller.propose(&[record]).await {
                    Ok(_) => break (first_id, end),
                    // Another broker took the block: again from the new high mark.
                    Err(BrokerError::ControllerRejected(why)) if attempts < BLOCK_ATTEMPTS_MAX => {
                        attempts += 1;
                        tracing::debug!(why, "producer id block taken meanwhile; retrying");
                    }
                    Err(e) => return Err(e),
                }
            };
            block.next = taken.0;
            block.end = taken.1;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::open_for_test;

    /// Ids come from committed blocks: they grow, and a restart takes a new block instead of
    /// reusing what was left of the old one.
    #[tokio::test]
    async fn ids_grow_and_a_restart_never_reuses_one() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_for_test(dir.path(), &[]).await;
        let ids = &node.producer_ids;
        assert_eq!(ids.allocate(&node.controller).await.unwrap(), 0);
        assert_eq!(ids.allocate(&node.controller).await.unwrap(), 1);
        assert!(ProducerIds::is_allocated(&node.image(), 1));
        assert!(!ProducerIds::is_allocated(&node.image(), BLOCK_IDS));
        node.controller.shutdown().await;
        drop(node);

        let node = open_for_test(dir.path(), &[]).await;
        let ids = &node.producer_ids;
        assert_eq!(ids.allocate(&node.controller).await.unwrap(), BLOCK_IDS);
        for i in 1..=BLOCK_IDS {
            assert_eq!(ids.allocate(&node.controller).await.unwrap(), BLOCK_IDS + i);
        }
        assert_eq!(node.image().producer_id_high_mark(), 3 * BLOCK_IDS);
        node.controller.shutdown().await;
    }

    #[test]
    fn a_corrupt_legacy_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_reserved_end(dir.path()).unwrap(), 0);
        crate::storage::checkpoint::write(
            &dir.path().join(LEGACY_FILE_NAME),
            "reserved_end 5000\n",
        )
        .unwrap();
        assert_eq!(legacy_reserved_end(dir.path()).unwrap(), 5000);
        std::fs::write(
            dir.path().join(LEGACY_FILE_NAME),
            "reserved_end 5\ncrc32 00000000\n",
        )
        .unwrap();
        assert!(legacy_reserved_end(dir.path()).is_err());
    }
}
