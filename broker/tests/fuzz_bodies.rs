//! The `partition_append` fuzz target's body on stable (see `broker/fuzz/`), so CI checks what the
//! fuzzer checks without nightly: scripted record sets, real and lying, appended to a partition on
//! a temp dir with reopens in between.

#[path = "../fuzz/bodies/partition_append.rs"]
mod body;

use proptest::prelude::*;

#[test]
fn hand_written_scripts_keep_the_partition_invariants() {
    // Well-formed batches across several rolls, a lying count, a crash reopen, a clean reopen.
    let mut script = Vec::new();
    for i in 0..40u8 {
        script.extend_from_slice(&[1, 15]);
        script.extend(std::iter::repeat_n(20 + i, 16));
    }
    script.extend_from_slice(&[2, 3, 5, 6, 7, 200]); // claims 199 records, holds 4
    script.push(3); // reopen after a crash
    script.extend_from_slice(&[1, 0, 9]);
    script.push(0x13); // clean reopen
    script.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    body::check(&script);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_scripts_keep_the_partition_invariants(
        script in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        body::check(&script);
    }
}
