//! The record accumulator: per-partition queues of batches, the batching policy (linger, batch
//! size, flush) and the sticky choice for keyless records. Pure data structure, no I/O and no
//! clock of its own (`now` is passed in), so it is unit-tested directly.
//!
//! Invariants:
//! - per partition, batches are a FIFO; records are appended only to the newest (open) batch,
//!   so a partition's records leave in the order they were appended;
//! - only the oldest batch of a partition is ever taken, and only when it is ready;
//! - a batch holds at least one record; a record larger than `batch_size` gets a batch alone.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::partitioner::Random;

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// Records that travel in one produce request for one partition.
#[derive(Debug)]
pub struct Batch<T> {
    pub items: Vec<T>,
    /// Sum of the records' estimated sizes.
    pub bytes: usize,
    /// When the first record was appended.
    pub created: Instant,
}

/// Whether a partition has a batch to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The oldest batch may be taken now.
    Ready,
    /// The oldest batch becomes ready (linger) at this instant unless it fills up first.
    WaitUntil(Instant),
    /// Nothing queued.
    Empty,
}

#[derive(Debug)]
pub struct Accumulator<T> {
    batch_size: usize,
    linger: Duration,
    queues: HashMap<TopicPartition, VecDeque<Batch<T>>>,
    /// Topic → (sticky partition, whether a record went there since it was chosen).
    sticky: HashMap<String, (i32, bool)>,
    random: Random,
}

impl<T> Accumulator<T> {
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        Accumulator {
            batch_size: batch_size.max(1),
            linger,
            queues: HashMap::new(),
            sticky: HashMap::new(),
            random: Random::default(),
        }
    }

    /// Whether a record of `size` bytes would join the open batch of `tp` (rather than open one).
    pub fn has_room(&self, tp: &TopicPartition, size: usize) -> bool {
        self.queues
            .get(tp)
            .and_then(|q| q.back())
            .is_some_and(|b| b.bytes + size <= self.batch_size)
    }

    /// Appends a record; returns true if it opened a new batch.
    pub fn append(&mut self, tp: TopicPartition, item: T, size: usize, now: Instant) -> bool {
        let open = self.has_room(&tp, size);
        let queue = self.queues.entry(tp).or_default();
        match queue.back_mut() {
            Some(b) if open => {
                b.items.push(item);
                b.bytes += size;
                false
            }
            _ => {
                queue.push_back(Batch {
                    items: vec![item],
                    bytes: size,
                    created: now,
                });
                true
            }
        }
    }

    /// The partition for a keyless record of `size` bytes to `topic` with `num_partitions`
    /// partitions (KIP-480): the topic's sticky partition while its open batch has room, else a
    /// new random one (different from the last when possible).
    pub fn sticky_partition(&mut self, topic: &str, num_partitions: usize, size: usize) -> i32 {
        let n = num_partitions.max(1);
        let current = self.sticky.get(topic).copied();
        let keep = match current {
            Some((p, used)) if (p as usize) < n => {
                !used || self.has_room(&(topic.to_string(), p), size)
            }
            _ => false,
        };
        let p = match current {
            Some((p, _)) if keep => p,
            other => self.random.next_sticky(other.map(|(p, _)| p), n),
        };
        self.sticky.insert(topic.to_string(), (p, true));
        p
    }

    /// Whether the oldest batch of `tp` may be sent. `force` (flush or close) makes any
    /// non-empty batch ready.
    pub fn readiness(&self, tp: &TopicPartition, now: Instant, force: bool) -> Readiness {
        let Some(queue) = self.queues.get(tp) else {
            return Readiness::Empty;
        };
        let Some(front) = queue.front() else {
            return Readiness::Empty;
        };
        let due = front.created + self.linger;
        if force || queue.len() > 1 || front.bytes >= self.batch_size || now >= due {
            Readiness::Ready
        } else {
            Readiness::WaitUntil(due)
        }
    }

    /// Takes the oldest batch of `tp` if it is ready.
    pub fn take_ready(
        &mut self,
        tp: &TopicPartition,
        now: Instant,
        force: bool,
    ) -> Option<Batch<T>> {
        if self.readiness(tp, now, force) != Readiness::Ready {
            return None;
        }
        let queue = self.queues.get_mut(tp)?;
        let batch = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(tp);
        }
        batch
    }

    /// Every queued batch of `tp`, oldest first (used to fail them when the producer gives up).
    pub fn take_all(&mut self, tp: &TopicPartition) -> Vec<Batch<T>> {
        self.queues
            .remove(tp)
            .map(|q| q.into_iter().collect())
            .unwrap_or_default()
    }

    /// Records queued (not yet taken) across all partitions.
    pub fn queued_records(&self) -> usize {
        self.queues
            .values()
            .flat_map(|q| q.iter())
            .map(|b| b.items.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn records_fill_a_batch_then_open_the_next_in_order() {
        let now = Instant::now();
        let mut acc = Accumulator::new(100, Duration::from_secs(60));
        assert!(acc.append(tp(0), 1, 40, now));
        assert!(!acc.append(tp(0), 2, 40, now));
        // 80 + 40 > 100: a new batch.
        assert!(acc.append(tp(0), 3, 40, now));
        assert_eq!(acc.queued_records(), 3);
        // The first batch is closed by the second, so it is ready before linger.
        assert_eq!(acc.readiness(&tp(0), now, false), Readiness::Ready);
        let b = acc.take_ready(&tp(0), now, false).unwrap();
        assert_eq!(b.items, vec![1, 2]);
        assert_eq!(b.bytes, 80);
        // The open batch waits for linger.
        assert_eq!(
            acc.readiness(&tp(0), now, false),
            Readiness::WaitUntil(now + Duration::from_secs(60))
        );
        assert!(acc.take_ready(&tp(0), now, false).is_none());
        assert_eq!(
            acc.take_ready(&tp(0), now + Duration::from_secs(60), false)
                .unwrap()
                .items,
            vec![3]
        );
        assert_eq!(acc.readiness(&tp(0), now, false), Readiness::Empty);
        assert_eq!(acc.queued_records(), 0);
    }

    #[test]
    fn a_full_batch_is_ready_at_once_and_an_oversized_record_gets_its_own() {
        let now = Instant::now();
        let mut acc = Accumulator::new(100, Duration::from_secs(60));
        assert!(acc.append(tp(1), "big", 500, now));
        assert_eq!(acc.readiness(&tp(1), now, false), Readiness::Ready);
        assert!(acc.append(tp(1), "small", 10, now));
        assert_eq!(
            acc.take_ready(&tp(1), now, false).unwrap().items,
            vec!["big"]
        );
        assert_eq!(
            acc.readiness(&tp(1), now, false),
            Readiness::WaitUntil(now + Duration::from_secs(60))
        );
    }

    #[test]
    fn force_makes_a_lingering_batch_ready_and_partitions_are_independent() {
        let now = Instant::now();
        let mut acc = Accumulator::new(1000, Duration::from_secs(60));
        acc.append(tp(0), 'a', 10, now);
        acc.append(tp(1), 'b', 10, now);
        assert!(acc.take_ready(&tp(0), now, false).is_none());
        assert_eq!(acc.take_ready(&tp(0), now, true).unwrap().items, vec!['a']);
        assert_eq!(acc.queued_records(), 1);
        assert_eq!(acc.take_all(&tp(1)).len(), 1);
        assert_eq!(acc.queued_records(), 0);
    }

    #[test]
    fn sticky_partition_holds_until_its_batch_closes() {
        let now = Instant::now();
        let mut acc = Accumulator::new(100, Duration::from_secs(60));
        let first = acc.sticky_partition("t", 4, 30);
        acc.append(tp(first), (), 30, now);
        for _ in 0..2 {
            // 3 x 30 fit in one batch of 100.
            let p = acc.sticky_partition("t", 4, 30);
            assert_eq!(p, first);
            acc.append(tp(p), (), 30, now);
        }
        // The fourth would open a new batch there: switch.
        let second = acc.sticky_partition("t", 4, 30);
        assert_ne!(second, first);
        acc.append(tp(second), (), 30, now);
        assert_eq!(acc.sticky_partition("t", 4, 30), second);
        // Once the batch is taken (sent), the next record picks another partition.
        acc.append(tp(second), (), 30, now);
        assert!(acc.take_ready(&tp(second), now, true).is_some());
        let third = acc.sticky_partition("t", 4, 30);
        assert_ne!(third, second);
        // One partition: always 0; a shrunk partition count is respected.
        assert_eq!(acc.sticky_partition("u", 1, 30), 0);
        assert!((0..2).contains(&acc.sticky_partition("t", 2, 30)));
    }
}
