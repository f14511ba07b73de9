//! The one fatal path. After a failed msync/fsync (or a write that failed after its disk blocks
//! were reserved) the page cache may no longer match the disk, and a later sync that "succeeds"
//! would acknowledge lost pages (the fsync-gate problem). Storage marks such errors
//! ([`sync_failed`]); the partition that sees one stops taking writes and reports it on the
//! broker's [`Fatal`] handle; `main` waits on the handle, stops serving and exits non-zero.
//! Nothing in the library exits the process.
//!
//! Running out of space while reserving blocks (before any byte is written) is not fatal: the
//! produce fails with KAFKA_STORAGE_ERROR and writes resume when space returns.

use std::io;
use std::sync::Arc;

use tokio::sync::watch;

/// The marker inside an [`io::Error`] whose failure is fatal.
#[derive(Debug, thiserror::Error)]
#[error("{0} (fatal: data may not have reached the disk)")]
struct SyncFailed(io::Error);

/// Marks `e` (from a sync, or a write past its reservation) as fatal.
pub fn sync_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SyncFailed(e))
}

/// Whether `e` came from [`sync_failed`].
pub fn is_fatal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SyncFailed>())
}

/// Test hook, for integration tests only: with `STRATA_TEST_FAIL_SYNCS_OF_TOPIC=<topic>` in the
/// broker's environment, every msync of that topic's files fails as a dying disk's would, so a
/// real broker process can be driven down the fatal path. Read once; unset (always, outside
/// tests), it costs one check of a cached `None` per msync.
pub const FAIL_SYNCS_ENV: &str = "STRATA_TEST_FAIL_SYNCS_OF_TOPIC";

/// The topic [`FAIL_SYNCS_ENV`] names, if any.
pub fn fail_syncs_topic() -> Option<&'static str> {
    static TOPIC: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TOPIC
        .get_or_init(|| std::env::var(FAIL_SYNCS_ENV).ok().filter(|t| !t.is_empty()))
        .as_deref()
}

/// Whether the test hook makes a sync of `path` (a file in a partition directory
/// `<topic>-<n>`) fail.
pub fn injected_sync_failure(path: &std::path::Path) -> bool {
    let Some(topic) = fail_syncs_topic() else {
        return false;
    };
    path.parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .and_then(|name| name.rsplit_once('-'))
        .is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok())
}

/// The broker's fatal signal: set once, by whoever saw the first fatal error; `main` owns the
/// reaction.
#[derive(Clone)]
pub struct Fatal(Arc<watch::Sender<Option<String>>>);

impl Default for Fatal {
    fn default() -> Self {
        Fatal(Arc::new(watch::Sender::new(None)))
    }
}

impl Fatal {
    /// Reports a fatal error (the first one is kept and logged; later ones are only logged).
    pub fn report(&self, what: String) {
        tracing::error!(error = %what, "fatal storage error; the broker halts");
        self.0.send_if_modified(|v| {
            let first = v.is_none();
            if first {
                *v = Some(what);
            }
            first
        });
    }

    /// The first fatal error, if one happened.
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolves with the first fatal error, once there is one.
    pub async fn wait(&self) -> String {
        let mut rx = self.0.subscribe();
        let first = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_default(),
            // The sender lives in `self`: it cannot be gone while we borrow it.
            Err(_) => std::future::pending().await,
        };
        first
    }
}
