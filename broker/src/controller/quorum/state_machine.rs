//! openraft's state machine over a [`MetadataStateMachine`], and its snapshots on disk
//! (`<data>/controller/snapshot`: `STRATA-SNAP1`, the postcard snapshot meta's length (u32 LE) and
//! bytes, the state's bytes, a CRC-32C (u32 LE) of all before it; written to a temp file, fsynced,
//! renamed, directory fsynced).
//!
//! Invariants:
//! - the state machine sees committed batches once each, in order; blank and membership entries,
//!   and batches it rejects, only move the applied id;
//! - a snapshot is on disk before openraft learns of it (so the log it covers may be purged), and
//!   an installed snapshot is on disk before the state machine takes it; a received snapshot is
//!   installed into a fresh state before its file is written, so one that does not install leaves
//!   the state and the file as they were;
//! - leftover `snapshot.N.tmp` files (a crash mid-write) are removed at open;
//! - at open the state machine is rebuilt from the snapshot file; a corrupt one refuses the start
//!   (the log it covered is gone: guessing would lose metadata).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};

use super::{Applied, MetadataStateMachine, TypeConfig};
use crate::storage::fatal;

const SNAPSHOT_FILE: &str = "snapshot";
const MAGIC: &[u8] = b"STRATA-SNAP1";

type Meta = SnapshotMeta<u64, openraft::BasicNode>;
type Result<T> = std::result::Result<T, StorageError<u64>>;

struct Inner {
    dir: PathBuf,
    sm: Box<dyn MetadataStateMachine>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    /// Distinguishes snapshots built at the same log id.
    snapshots_built: u64,
    /// Set at shutdown: openraft does not join its snapshot-building tasks, and one still running
    /// must not write over the snapshot of the node that restarts in this directory.
    closed: bool,
}

/// The state machine openraft drives; clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
}

/// Why the state could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct OpenError {
    path: String,
    what: String,
}

fn encode_snapshot(meta: &Meta, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let meta = postcard::to_allocvec(meta).map_err(|e| e.to_string())?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| "snapshot meta too large")?;
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + meta.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> std::result::Result<(Meta, Vec<u8>), String> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or("shorter than its checksum")?;
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("checksum mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC).ok_or("not a snapshot file")?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or("no meta length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err("meta length past the end".into());
    }
    let (meta, data) = rest.split_at(len);
    let meta = postcard::from_bytes(meta).map_err(|e| format!("meta does not decode: {e}"))?;
    Ok((meta, data.to_vec()))
}

fn write_snapshot(dir: &Path, meta: &Meta, data: &[u8]) -> std::io::Result<()> {
    let bytes = encode_snapshot(meta, data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let path = dir.join(SNAPSHOT_FILE);
    // Each write its own temp file, as in `storage::checkpoint`.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.{n}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all().map_err(fatal::sync_failed)?;
    std::fs::rename(&tmp, &path)?;
    crate::storage::sync_dir(dir).map_err(fatal::sync_failed)
}

fn read_snapshot(dir: &Path) -> std::result::Result<Option<(Meta, Vec<u8>)>, OpenError> {
    let path = dir.join(SNAPSHOT_FILE);
    let err = |what: String| OpenError {
        path: path.display().to_string(),
        what,
    };
    match std::fs::read(&path) {
        Ok(bytes) => decode_snapshot(&bytes).map(Some).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Removes `snapshot.N.tmp` files a crash left behind (never renamed: not a snapshot). A file that
/// cannot be removed is only logged: it is never read.
fn remove_temp_snapshots(dir: &Path) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_temp = name
            .strip_prefix(SNAPSHOT_FILE)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_temp {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("{}: not removed: {e}", entry.path().display());
            }
        }
    }
}

impl StateMachineStore {
    /// Loads the newest snapshot in `dir` (if any) into `sm`.
    pub fn open(
        dir: &Path,
        mut sm: Box<dyn MetadataStateMachine>,
    ) -> std::result::Result<StateMachineStore, OpenError> {
        remove_temp_snapshots(dir);
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        if let Some((meta, data)) = read_snapshot(dir)? {
            let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
            sm.install(index, &data).map_err(|what| OpenError {
                path: dir.join(SNAPSHOT_FILE).display().to_string(),
                what: format!("the state machine refused it: {what}"),
            })?;
            last_applied = meta.last_log_id;
            membership = meta.last_membership;
        }
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                sm,
                last_applied,
                membership,
                snapshots_built: 0,
                closed: false,
            })),
        })
    }

    // openraft's own error type, as its traits return it.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let inner = self.inner.lock().map_err(|_| {
            StorageIOError::read_state_machine(AnyError::error("state machine lock poisoned"))
        })?;
        if inner.closed {
            return Err(
                StorageIOError::read_state_machine(AnyError::error("controller stopped")).into(),
            );
        }
        Ok(inner)
    }

    /// Stops every later call from touching the state or its files (waits for one in progress).
    pub fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let mut inner = self.lock()?;
        inner.snapshots_built += 1;
        let data = inner.sm.snapshot();
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, inner.snapshots_built),
            None => format!("none-{}", inner.snapshots_built),
        };
        let meta = Meta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id,
        };
        // Under the lock: an installed snapshot cannot be overwritten by an older build.
        write_snapshot(&inner.dir, &meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(
        Option<LogId<u64>>,
        StoredMembership<u64, openraft::BasicNode>,
    )> {
        let inner = self.lock()?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock()?;
        let mut answers = Vec::new();
        for entry in entries {
            let mut answer = Ok(());
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => match inner.sm.apply(entry.log_id.index, &batch.0) {
                    Ok(applied) => {
                        if let Err(why) = &applied {
                            // Committed but refused: every member skips it alike.
                            tracing::warn!(
                                "metadata batch at {} rejected, skipped: {why}",
                                entry.log_id.index
                            );
                        }
                        answer = applied;
                    }
                    Err(e) => {
                        tracing::error!(
                            "metadata batch at {} does not apply: {e}; the controller stops",
                            entry.log_id.index
                        );
                        return Err(StorageIOError::apply(entry.log_id, AnyError::error(e)).into());
                    }
                },
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            inner.last_applied = Some(entry.log_id);
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let mut inner = self.lock()?;
        let signature = || Some(meta.signature());
        // Into a fresh state first: a snapshot that does not install must not replace the good
        // state, nor the good snapshot file a restart starts from.
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let mut fresh = inner.sm.fresh();
        fresh.install(index, &data).map_err(|e| {
            tracing::error!("metadata snapshot at {index} does not install: {e}; refused");
            StorageIOError::write_snapshot(signature(), AnyError::error(e))
        })?;
        write_snapshot(&inner.dir, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        inner.sm = fresh;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let dir = self.lock()?.dir.clone();
        let snapshot = read_snapshot(&dir)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            });
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state that is one byte string; a snapshot that starts with `bad` does not install.
    struct Bytes(Vec<u8>);

    impl MetadataStateMachine for Bytes {
        fn apply(
            &mut self,
            _index: u64,
            batch: &[u8],
        ) -> std::result::Result<Applied, crate::controller::quorum::Fatal> {
            self.0 = batch.to_vec();
            Ok(Ok(()))
        }
        fn fresh(&self) -> Box<dyn MetadataStateMachine> {
            Box::new(Bytes(Vec::new()))
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.clone()
        }
        fn install(&mut self, _index: u64, snapshot: &[u8]) -> std::result::Result<(), String> {
            if snapshot.starts_with(b"bad") {
                return Err("not a state".into());
            }
            self.0 = snapshot.to_vec();
            Ok(())
        }
    }

    fn meta_at(index: u64) -> Meta {
        Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}-1"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_that_does_not_install_leaves_the_good_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateMachineStore::open(dir.path(), Box::new(Bytes(Vec::new()))).unwrap();
        store
            .install_snapshot(&meta_at(5), Box::new(Cursor::new(b"good".to_vec())))
            .await
            .unwrap();
        let refused = store
            .install_snapshot(&meta_at(9), Box::new(Cursor::new(b"bad state".to_vec())))
            .await;
        assert!(refused.is_err());
        // The state, the applied id and the file are still the good snapshot's.
        let (applied, _) = store.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(5));
        assert_eq!(store.lock().unwrap().sm.snapshot(), b"good");
        let (meta, data) = read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!((meta, data), (meta_at(5), b"good".to_vec()));
        // And a restart in that directory starts from it.
        store.close();
        let reopened = StateMachineStore::open(dir.path(), Box::new(Bytes(Vec::new()))).unwrap();
        assert_eq!(reopened.lock().unwrap().sm.snapshot(), b"good");
    }

    #[test]
    fn leftover_temp_snapshots_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), &meta_at(3), b"state").unwrap();
        let leftover = dir.path().join(format!("{SNAPSHOT_FILE}.7.tmp"));
        std::fs::write(&leftover, b"half a snapshot").unwrap();
        let store = StateMachineStore::open(dir.path(), Box::new(Bytes(Vec::new()))).unwrap();
        assert!(!leftover.exists());
        assert_eq!(store.lock().unwrap().sm.snapshot(), b"state");
    }

    #[test]
    fn snapshot_files_round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "2-9-1".into(),
        };
        write_snapshot(dir.path(), &meta, b"state").unwrap();
        let (got, data) = read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(got, meta);
        assert_eq!(data, b"state");
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        for i in [0, MAGIC.len() + 2, bytes.len() - 1] {
            bytes[i] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert!(read_snapshot(dir.path()).is_err(), "flipped byte {i}");
            bytes[i] ^= 1;
        }
        std::fs::write(&path, &bytes[..3]).unwrap();
        assert!(read_snapshot(dir.path()).is_err());
    }
}
