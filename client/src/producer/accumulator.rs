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

/// Records that travel in one produce request for one partition, with per-batch data `M`.
#[derive(Debug)]
pub struct Batch<T, M = ()> {
    pub items: Vec<T>,
    /// Sum of the records' estimated sizes.
    pub bytes: usize,
    /// When the first record was appended.
    pub created: Instant,
    /// Per-batch data chosen when the batch was opened.
    pub meta: M,
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

/// The batching policy: `batch.size` and `linger.ms`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub batch_size: usize,
    pub linger: Duration,
}

impl Policy {
    pub fn new(batch_size: usize, linger: Duration) -> Policy {
        Policy {
            batch_size: batch_size.max(1),
            linger,
        }
    }
}

/// What [`PartitionQueue::append_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record opened a new batch.
    pub opened: bool,
    /// The record's batch reached `batch_size`.
    pub full: bool,
}

/// The batches of one partition, oldest first (the accumulator's invariants hold per queue).
#[derive(Debug)]
pub struct PartitionQueue<T, M = ()> {
    batches: VecDeque<Batch<T, M>>,
}

impl<T, M> Default for PartitionQueue<T, M> {
    fn default() -> Self {
        PartitionQueue {
            batches: VecDeque::new(),
        }
    }
}

impl<T, M> PartitionQueue<T, M> {
    /// Whether a record of `size` bytes would join the open batch (rather than open one).
    pub fn has_room(&self, policy: &Policy, size: usize) -> bool {
        self.batches
            .back()
            .is_some_and(|b| b.bytes + size <= policy.batch_size)
    }

    /// Appends a record to the open batch, or opens a batch (reading `now` and `meta` only
    /// then); returns what happened and the record's batch.
    pub fn append_with(
        &mut self,
        policy: &Policy,
        item: T,
        size: usize,
        now: impl FnOnce() -> Instant,
        meta: impl FnOnce() -> M,
    ) -> (Appended, &mut Batch<T, M>) {
        let opened = !self.has_room(policy, size);
        let batch = if opened {
            self.batches.push_back(Batch {
                items: vec![item],
                bytes: size,
                created: now(),
                meta: meta(),
            });
            self.batches.back_mut().expect("a batch was just pushed")
        } else {
            let batch = self
                .batches
                .back_mut()
                .expect("has_room implies an open batch");
            batch.items.push(item);
            batch.bytes += size;
            batch
        };
        let full = batch.bytes >= policy.batch_size;
        (Appended { opened, full }, batch)
    }

    /// Whether the oldest batch may be sent. `force` (flush or close) makes any non-empty
    /// batch ready.
    pub fn readiness(&self, policy: &Policy, now: Instant, force: bool) -> Readiness {
        let Some(front) = self.batches.front() else {
            return Readiness::Empty;
        };
        let due = front.created + policy.linger;
        if force || self.batches.len() > 1 || front.bytes >= policy.batch_size || now >= due {
            Readiness::Ready
        } else {
            Readiness::WaitUntil(due)
        }
    }

    /// Takes the oldest batch if it is ready.
    pub fn take_ready(
        &mut self,
        policy: &Policy,
        now: Instant,
        force: bool,
    ) -> Option<Batch<T, M>> {
        if self.readiness(policy, now, force) != Readiness::Ready {
            return None;
        }
        self.batches.pop_front()
    }

    /// Every queued batch, oldest first.
    pub fn take_all(&mut self) -> Vec<Batch<T, M>> {
        self.batches.drain(..).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Records queued (not yet taken).
    pub fn queued_records(&self) -> usize {
        self.batches.iter().map(|b| b.items.len()).sum()
    }
}

/// The sticky choice of one topic (KIP-480).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sticky {
    /// (sticky partition, whether a record went there since it was chosen).
    current: Option<(i32, bool)>,
}

impl Sticky {
    /// The partition for a keyless record among `num_partitions`: the current one while
    /// `has_room(partition)` (its open batch takes the record) or no record went there yet,
    /// else a new random one (different from the last when possible).
    pub fn choose(
        &mut self,
        num_partitions: usize,
        random: &Random,
        has_room: impl FnOnce(i32) -> bool,
    ) -> i32 {
        let n = num_partitions.max(1);
        let keep = match self.current {
            Some((p, used)) if (p as usize) < n => !used || has_room(p),
            _ => false,
        };
        let p = match self.current {
            Some((p, _)) if keep => p,
            other => random.next_sticky(other.map(|(p, _)| p), n),
        };
        self.current = Some((p, true));
        p
    }
}

#[derive(Debug)]
pub struct Accumulator<T> {
    policy: Policy,
    queues: HashMap<TopicPartition, PartitionQueue<T>>,
    sticky: HashMap<String, Sticky>,
    random: Random,
}

impl<T> Accumulator<T> {
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        Accumulator {
            policy: Policy::new(batch_size, linger),
            queues: HashMap::new(),
            sticky: HashMap::new(),
            random: Random::default(),
        }
    }

    /// Whether a record of `size` bytes would join the open batch of `tp` (rather than open one).
    pub fn has_room(&self, tp: &TopicPartition, size: usize) -> bool {
        self.queues
            .get(tp)
            .is_some_and(|q| q.has_room(&self.policy, size))
    }

    /// Appends a record; returns true if it opened a new batch.
    pub fn append(&mut self, tp: TopicPartition, item: T, size: usize, now: Instant) -> bool {
        let policy = self.policy;
        let queue = self.queues.entry(tp).or_default();
        queue
            .append_with(&policy, item, size, || now, || ())
            .0
            .opened
    }

    /// The partition for a keyless record of `size` bytes to `topic` with `num_partitions`
    /// partitions (KIP-480): the topic's sticky partition while its open batch has room, else a
    /// new random one (different from the last when possible).
    pub fn sticky_partition(&mut self, topic: &str, num_partitions: usize, size: usize) -> i32 {
        let mut sticky = self.sticky.get(topic).copied().unwrap_or_default();
        let p = sticky.choose(num_partitions, &self.random, |p| {
            self.has_room(&(topic.to_string(), p), size)
        });
        self.sticky.insert(topic.to_string(), sticky);
        p
    }

    /// Whether the oldest batch of `tp` may be sent. `force` (flush or close) makes any
    /// non-empty batch ready.
    pub fn readiness(&self, tp: &TopicPartition, now: Instant, force: bool) -> Readiness {
        match self.queues.get(tp) {
            Some(q) => q.readiness(&self.policy, now, force),
            None => Readiness::Empty,
        }
    }

    /// Takes the oldest batch of `tp` if it is ready.
    pub fn take_ready(
        &mut self,
        tp: &TopicPartition,
        now: Instant,
        force: bool,
    ) -> Option<Batch<T>> {
        let queue = self.queues.get_mut(tp)?;
        let batch = queue.take_ready(&self.policy, now, force);
        if queue.is_empty() {
            self.queues.remove(tp);
        }
        batch
    }

    /// Every queued batch of `tp`, oldest first (used to fail them when the producer gives up).
    pub fn take_all(&mut self, tp: &TopicPartition) -> Vec<Batch<T>> {
        self.queues
            .remove(tp)
            .map(|mut q| q.take_all())
            .unwrap_or_default()
    }

    /// Records queued (not yet taken) across all partitions.
    pub fn queued_records(&self) -> usize {
        self.queues.values().map(|q| q.queued_records()).sum()
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
