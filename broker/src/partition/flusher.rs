//! The flush threads (`log.flush.threads`): a partition that wants flushing is queued to one of
//! them, which msyncs what the partition has appended and then advances its durable offset.
//!
//! A partition is queued at most once at a time (its `flush_queued` flag); appends that arrive
//! while its flush runs queue it again, so one flush covers everything that arrived meanwhile
//! (group commit). A partition always goes to the same thread, so its flushes never overlap.
//! Plain OS threads, because msync blocks: on the async runtime it would stall other clients, and
//! a hand-off to `spawn_blocking` costs two more thread wake-ups on every `acks=-1` answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::Partition;
use crate::storage::fatal::Fatal;
use crate::storage::log::SEGMENT_OPEN_MAX_DEFAULT;
use crate::storage::OpenSegments;

pub struct Flushers {
    queues: Vec<Mutex<mpsc::Sender<Arc<Partition>>>>,
    next_slot: AtomicUsize,
    /// Where the partitions flushed here report a fatal storage error (`main` halts on it).
    fatal: Fatal,
    /// The bound on sealed segments holding open files (`log.segment.open.max`), shared by the
    /// partitions flushed here: the storage state every partition of the broker shares.
    open_segments: Arc<OpenSegments>,
}

impl Flushers {
    /// Starts `threads` flush threads (at least one), the partitions' sealed segments bounded by
    /// the default of `log.segment.open.max`.
    pub fn start(threads: usize) -> std::io::Result<Arc<Flushers>> {
        Flushers::start_with(threads, OpenSegments::new(SEGMENT_OPEN_MAX_DEFAULT))
    }

    /// Starts `threads` flush threads (at least one) for partitions whose sealed segments share
    /// `open_segments`.
    pub fn start_with(
        threads: usize,
        open_segments: Arc<OpenSegments>,
    ) -> std::io::Result<Arc<Flushers>> {
        let mut queues = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Arc<Partition>>();
            std::thread::Builder::new()
                .name(format!("strata-flush-{i}"))
                .spawn(move || {
                    // Ends when every sender is gone (the broker is shutting down).
                    for partition in rx {
                        partition.flush_now();
                    }
                })?;
            queues.push(Mutex::new(tx));
        }
        Ok(Arc::new(Flushers {
            queues,
            next_slot: AtomicUsize::new(0),
            fatal: Fatal::default(),
            open_segments,
        }))
    }

    /// No threads: nothing flushes unless a test drives the flush steps itself.
    #[cfg(test)]
    pub fn manual() -> Arc<Flushers> {
        Arc::new(Flushers {
            queues: Vec::new(),
            next_slot: AtomicUsize::new(0),
            fatal: Fatal::default(),
            open_segments: OpenSegments::new(SEGMENT_OPEN_MAX_DEFAULT),
        })
    }

    pub fn fatal(&self) -> &Fatal {
        &self.fatal
    }

    pub fn open_segments(&self) -> &Arc<OpenSegments> {
        &self.open_segments
    }

    /// The queue a new partition will use: round robin.
    pub fn assign_slot(&self) -> usize {
        self.next_slot.fetch_add(1, Ordering::Relaxed) % self.queues.len().max(1)
    }

    pub fn submit(&self, slot: usize, partition: Arc<Partition>) {
        if self.queues.is_empty() {
            return;
        }
        let queue = self.queues[slot % self.queues.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A send fails only if the thread died, which only a panic in a flush can cause; the
        // partition's waiters then time out with REQUEST_TIMED_OUT rather than hang.
        if queue.send(partition).is_err() {
            tracing::error!("flush thread is gone; acks=-1 produces will time out");
        }
    }
}
