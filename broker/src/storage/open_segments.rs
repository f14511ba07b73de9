//! The broker-wide bound on sealed segments held open (`log.segment.open.max`).
//!
//! A sealed segment keeps its metadata in memory and its three files (one mapping and one fd
//! each) in a [`SegmentSlot`] that is filled on demand and emptied here, least recently used
//! first, once more than `max_open` slots are filled across all partitions.
//!
//! Invariants:
//! - `open` counts the filled slots; it exceeds `max_open` only between a slot being filled and
//!   the eviction that filling runs;
//! - releasing a slot drops only its reference to the files: a reader that cloned the `Arc`
//!   (or holds a `Bytes` slice of the `.log`) keeps the mapping alive until it is done;
//! - the hot path takes no shared lock: a hit locks only its own slot and stamps it with a
//!   relaxed atomic; the shared list is locked only when a slot is filled (a miss);
//! - lock order: the shared list, then a slot; a slot's lock is never held while taking the
//!   list's (a filler sets its slot, unlocks it, then registers).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::segment::SegmentFiles;

/// Where one sealed segment's files live while they are open.
#[derive(Default)]
pub struct SegmentSlot {
    files: Mutex<Option<Arc<SegmentFiles>>>,
    /// The [`OpenSegments`] clock value at the last use: the LRU order.
    last_used: AtomicU64,
}

impl SegmentSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<SegmentFiles>>> {
        // Only `Option` moves happen under this lock: a panic cannot leave it half-changed.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct OpenSegments {
    max_open: usize,
    open: AtomicUsize,
    clock: AtomicU64,
    /// Every filled slot (and, until the next clean-up, slots emptied by their segment's drop).
    held: Mutex<Vec<Arc<SegmentSlot>>>,
}

impl OpenSegments {
    pub fn new(max_open: usize) -> Arc<OpenSegments> {
        Arc::new(OpenSegments {
            max_open,
            open: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        })
    }

    /// Sealed segments whose files are open now, across every log sharing this bound.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max_open(&self) -> usize {
        self.max_open
    }

    fn touch(&self, slot: &SegmentSlot) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        slot.last_used.store(now, Ordering::Relaxed);
    }

    /// The slot's files if they are open, recording the use.
    pub fn get(&self, slot: &SegmentSlot) -> Option<Arc<SegmentFiles>> {
        let files = slot.lock().clone();
        if files.is_some() {
            self.touch(slot);
        }
        files
    }

    /// Fills `slot` with `files` (kept if it was filled meanwhile) and releases the least
    /// recently used slots past the bound. Returns the files now in the slot.
    pub fn insert(&self, slot: &Arc<SegmentSlot>, files: Arc<SegmentFiles>) -> Arc<SegmentFiles> {
        self.touch(slot);
        let (files, filled) = {
            let mut guard = slot.lock();
            match &*guard {
                Some(existing) => (Arc::clone(existing), false),
                None => {
                    *guard = Some(Arc::clone(&files));
                    (files, true)
                }
            }
        };
        if filled {
            self.open.fetch_add(1, Ordering::Relaxed);
            let released = {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                held.push(Arc::clone(slot));
                self.evict(&mut held)
            };
            // Unmapping and closing happen here, after the shared list is unlocked.
            drop(released);
        }
        files
    }

    /// Empties `slot` (its segment is going away).
    pub fn release(&self, slot: &SegmentSlot) {
        let files = slot.lock().take();
        if files.is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        drop(files);
    }

    /// Past the bound, empties the least recently used slots down to 7/8 of it, so that the sort
    /// is paid once per `max_open / 8` misses, not on each. Also forgets emptied slots.
    fn evict(&self, held: &mut Vec<Arc<SegmentSlot>>) -> Vec<Arc<SegmentFiles>> {
        let open = self.open.load(Ordering::Relaxed);
        let mut released = Vec::new();
        if open <= self.max_open {
            if held.len() > 2 * open + 64 {
                held.retain(|s| s.lock().is_some());
            }
            return released;
        }
        held.retain(|s| s.lock().is_some());
        let target = self.max_open - self.max_open / 8;
        let excess = held.len().saturating_sub(target);
        held.sort_unstable_by_key(|s| s.last_used.load(Ordering::Relaxed));
        for slot in held.drain(..excess) {
            if let Some(files) = slot.lock().take() {
                self.open.fetch_sub(1, Ordering::Relaxed);
                released.push(files);
            }
        }
        released
    }
}
