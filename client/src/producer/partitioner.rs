//! Choosing a partition for a record, compatible with the Java client's default partitioner and
//! librdkafka's `murmur2_random`:
//! - an explicit partition wins;
//! - a keyed record goes to `toPositive(murmur2(key)) % num_partitions` (Kafka's murmur2, seed
//!   `0x9747b28c`; `toPositive(x) = x & 0x7fffffff`), so the same key lands on the same partition
//!   whichever of these clients produced it;
//! - a keyless record is placed by the sticky partitioner (KIP-480): every keyless record of a
//!   topic goes to one partition until that partition's open batch is closed (full or sent),
//!   then another partition is picked at random. The accumulator decides when to switch; this
//!   module only draws the partitions.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    // Java's switch falls through from case 3 to 1; the bytes are sign-extended then masked.
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// The partition of a keyed record among `num_partitions` (> 0).
pub fn partition_for_key(key: &[u8], num_partitions: usize) -> i32 {
    debug_assert!(num_partitions > 0);
    let n = num_partitions.max(1) as u32;
    ((to_positive(murmur2(key)) as u32) % n) as i32
}

/// A small non-cryptographic random source for the sticky partitioner (no extra dependency).
#[derive(Debug)]
pub struct Random {
    state: AtomicU64,
}

impl Default for Random {
    fn default() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Random {
            state: AtomicU64::new(h.finish() | 1),
        }
    }
}

impl Random {
    /// A value in `0..n` (n > 0); splitmix64 over an atomic counter.
    pub fn below(&self, n: usize) -> usize {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    }

    /// A new sticky partition: random, and different from `previous` when there is a choice.
    pub fn next_sticky(&self, previous: Option<i32>, num_partitions: usize) -> i32 {
        let n = num_partitions.max(1);
        match previous {
            Some(p) if n > 1 && (p as usize) < n => {
                // Uniform over the other n-1 partitions.
                let r = self.below(n - 1) as i32;
                if r >= p {
                    r + 1
                } else {
                    r
                }
            }
            _ => self.below(n) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                *expected,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn murmur2_handles_every_tail_length_and_high_bytes() {
        // Bytes >= 0x80 are sign-extended in Java before masking; the result is the same as
        // treating them unsigned, which this checks does not panic and is deterministic.
        for len in 0..9 {
            let data: Vec<u8> = (0..len).map(|i| 0xf0 + i as u8).collect();
            assert_eq!(murmur2(&data), murmur2(&data));
        }
        assert_eq!(murmur2(b""), murmur2(&[]));
    }

    #[test]
    fn keyed_partition_is_to_positive_murmur2_mod_n() {
        // -973932308 & 0x7fffffff = 1173551340; % 6 = 0, % 7 = 3.
        assert_eq!(to_positive(-973932308), 1173551340);
        assert_eq!(partition_for_key(b"21", 6), 0);
        assert_eq!(partition_for_key(b"21", 7), 3);
        // -790332482 & 0x7fffffff = 1357151166; % 5 = 1.
        assert_eq!(partition_for_key(b"foobar", 5), 1);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(partition_for_key(b"abc", 1), 0);
    }

    #[test]
    fn sticky_draw_changes_partition_when_it_can() {
        let r = Random::default();
        for _ in 0..1000 {
            let p = r.next_sticky(Some(2), 4);
            assert!((0..4).contains(&p) && p != 2, "{p}");
            assert_eq!(r.next_sticky(Some(0), 1), 0);
            assert!((0..3).contains(&r.next_sticky(None, 3)));
        }
        let mut seen = [false; 4];
        for _ in 0..1000 {
            seen[r.next_sticky(None, 4) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
