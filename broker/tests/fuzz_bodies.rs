//! The `partition_append` fuzz target's body on stable (see `broker/fuzz/`), so CI checks what the
//! fuzzer checks without nightly: scripted record sets, real and lying, appended to a partition on
//! a temp dir with reopens in between, one partition across several inputs as in the fuzzer.

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
    script.push(0x7f); // reopen after a crash
    script.extend_from_slice(&[1, 0, 9]);
    // A second input on the same partition (one reopen an input): a clean reopen, then appends
    // after the first input's records.
    let second = [0xff, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 10, 20, 30, 40];
    body::check_from_fresh(&[script.as_slice(), &second]);
}

#[test]
fn the_long_lived_partition_is_retired_and_replaced() {
    // More inputs than a log lives for: `check` retires it (recovery, comparison) and goes on.
    for i in 0..300u16 {
        let size = (i % 200) as u8;
        body::check(&[1, 3, size, size, size]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_scripts_keep_the_partition_invariants(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..6),
    ) {
        body::check_from_fresh(&inputs);
    }
}

/// Replays what the fuzz target wrote on a panic (`STRATA_FUZZ_HISTORY=<dir>`): the inputs run on
/// one partition before the failing one, in order.
#[test]
#[ignore = "replays a fuzzer's history: set STRATA_FUZZ_HISTORY"]
fn replay_a_recorded_history() {
    let Some(dir) = std::env::var_os("STRATA_FUZZ_HISTORY") else {
        panic!("set STRATA_FUZZ_HISTORY to a directory the fuzz target wrote");
    };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("history dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let inputs: Vec<Vec<u8>> = names
        .iter()
        .map(|p| std::fs::read(p).expect("input"))
        .collect();
    body::check_from_fresh(&inputs);
}
