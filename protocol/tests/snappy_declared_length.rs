//! A snappy block states its uncompressed length up front, and validation sizes its buffer from
//! it. A producer sends a few bytes that claim tens of MiB: the claim must be checked against what
//! those bytes could ever decompress to before anything is allocated.
//!
//! Its own test binary: the global allocator below records the largest single allocation, which
//! only means something while no other test runs in the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_protocol::record_batch::{
    build_batch, validate_batches_with, BatchError, RecordLimits, BATCH_HEADER_BYTES,
    BATCH_LOG_OVERHEAD_BYTES,
};

struct LargestAllocation;

static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_BYTES.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// A batch of one record whose body is replaced by `body`, marked snappy, with a correct CRC.
fn snappy_batch(body: &[u8]) -> Vec<u8> {
    let plain = build_batch(0, 7, &[(None, b"v")]).to_vec();
    let mut b = plain[..BATCH_HEADER_BYTES].to_vec();
    b.extend_from_slice(body);
    let len = (b.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[21..23].copy_from_slice(&2i16.to_be_bytes()); // attributes: snappy
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A raw snappy block: the varint uncompressed length, then one literal byte.
fn block_claiming(uncompressed_bytes: u64) -> Vec<u8> {
    let mut block = Vec::new();
    let mut n = uncompressed_bytes;
    while n >= 0x80 {
        block.push((n as u8) | 0x80);
        n >>= 7;
    }
    block.push(n as u8);
    block.extend_from_slice(&[0x00, b'x']); // literal of length 1
    block
}

#[test]
fn a_tiny_snappy_block_claiming_60_mib_is_refused_without_allocating_it() {
    let claimed = 60u64 << 20;
    // Unframed: the whole body is one raw block.
    let raw = snappy_batch(&block_claiming(claimed));
    // Framed as snappy-java does: the 16-byte header, then [u32 length][block].
    let mut framed_body = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    let block = block_claiming(claimed);
    framed_body.extend_from_slice(&(block.len() as u32).to_be_bytes());
    framed_body.extend_from_slice(&block);
    let framed = snappy_batch(&framed_body);

    for (name, batch) in [("raw", raw), ("framed", framed)] {
        assert!(batch.len() < 100, "{name}: {} bytes", batch.len());
        LARGEST_BYTES.store(0, Ordering::Relaxed);
        let err = validate_batches_with(&batch, &RecordLimits::DEFAULT)
            .expect_err("a block that cannot hold what it claims is refused");
        let largest = LARGEST_BYTES.load(Ordering::Relaxed);
        assert!(
            matches!(err, BatchError::BadCompression(_)),
            "{name}: {err:?}"
        );
        assert!(
            largest < 1 << 20,
            "{name}: validation allocated {largest} bytes for a {}-byte batch",
            batch.len()
        );
    }
}
