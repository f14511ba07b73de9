//! The Raft log and vote on disk, under `<data>/controller/`:
//! - `raft.log` — entries appended as records `[len u32 LE][crc32c u32 LE][postcard entry]`;
//! - `vote` — the vote, a checkpoint (atomic, CRC-checked);
//! - `purged` — the last purged log id, a checkpoint.
//!
//! Every live entry is also kept in memory (the log is bounded by snapshots: openraft purges what a
//! snapshot covers), so reads never touch the file.
//!
//! Invariants:
//! - `append` calls openraft's flushed callback only after the records are fsynced;
//! - `truncate` cuts the file and fsyncs it before returning; `purge` writes `purged` first, so
//!   records at or below it in the file are ignored at open; the file is rewritten (temp, fsync,
//!   rename, fsync dir) once purged records outweigh live ones;
//! - entries in the file are consecutive; at open, the first record that is short, fails its CRC,
//!   does not decode or breaks the sequence ends the log: the file is cut there (logged);
//! - nothing read from disk panics; a corrupt `vote` or `purged` checkpoint refuses the start.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, LogId, LogState, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use super::TypeConfig;
use crate::storage::checkpoint;
use crate::storage::fatal;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const HEADER_BYTES: usize = 8;
/// A record longer than this is not one we wrote (entries come from frames of at most
/// `controller.socket.request.max.bytes`, whose maximum is far below): treated as a torn tail.
const RECORD_BYTES_MAX: usize = 1 << 30;
/// Purged bytes that make a rewrite worth it (and they must outweigh the live ones).
const REWRITE_BYTES_MIN: u64 = 1 << 20;

type Result<T> = std::result::Result<T, StorageError<u64>>;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{path}: {what}")]
    Corrupt { path: String, what: String },
}

struct Inner {
    dir: PathBuf,
    file: File,
    /// Length of the file's good records: where the next append goes.
    end: u64,
    /// Live entries by index, with their record's position and length in the file.
    entries: BTreeMap<u64, (u64, u64, Entry<TypeConfig>)>,
    purged: Option<LogId<u64>>,
    /// Bytes at the head of the file held by purged entries.
    purged_bytes: u64,
    vote: Option<Vote<u64>>,
}

/// The durable log; clones share it (openraft's reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn lock_err(subject_write: bool) -> StorageError<u64> {
    let e = AnyError::error("controller log lock poisoned");
    if subject_write {
        StorageIOError::write_logs(e).into()
    } else {
        StorageIOError::read_logs(e).into()
    }
}

fn encode_record(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    let mut body = postcard::to_extend(entry, std::mem::take(out))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = body.len() - start - HEADER_BYTES;
    let crc = crc32c::crc32c(&body[start + HEADER_BYTES..]);
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| (l as usize) <= RECORD_BYTES_MAX)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "log entry too large"))?;
    body[start..start + 4].copy_from_slice(&len.to_le_bytes());
    body[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    *out = body;
    Ok(())
}

/// Decodes the record at the start of `bytes`: the entry and the record's length, or why not.
fn decode_record(bytes: &[u8]) -> std::result::Result<(Entry<TypeConfig>, usize), String> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or_else(|| format!("{} bytes left, a record header needs 8", bytes.len()))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > RECORD_BYTES_MAX {
        return Err(format!("record length {len} is not plausible"));
    }
    let body = bytes
        .get(HEADER_BYTES..HEADER_BYTES + len)
        .ok_or_else(|| format!("record of {len} bytes is cut short"))?;
    if crc32c::crc32c(body) != crc {
        return Err("record checksum mismatch".into());
    }
    let entry = postcard::from_bytes(body).map_err(|e| format!("record does not decode: {e}"))?;
    Ok((entry, HEADER_BYTES + len))
}

fn log_id_text(id: &LogId<u64>) -> String {
    format!(
        "{} {} {}",
        id.leader_id.term, id.leader_id.node_id, id.index
    )
}

fn parse_numbers<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut words = text.split_whitespace();
    for slot in out.iter_mut() {
        *slot = words.next()?.parse().ok()?;
    }
    words.next().is_none().then_some(out)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn or corrupt tail.
    pub fn open(dir: &Path) -> std::result::Result<LogStore, OpenError> {
        let corrupt = |file: &str, what: &str| OpenError::Corrupt {
            path: dir.join(file).display().to_string(),
            what: what.to_string(),
        };
        let vote = match checkpoint::read(&dir.join(VOTE_FILE))? {
            None => None,
            Some(text) => {
                let [term, node, committed] = parse_numbers(text.trim_start_matches("vote "))
                    .ok_or_else(|| corrupt(VOTE_FILE, "not 'vote TERM NODE COMMITTED'"))?;
                Some(if committed == 1 {
                    Vote::new_committed(term, node)
                } else {
                    Vote::new(term, node)
                })
            }
        };
        let purged = match checkpoint::read(&dir.join(PURGED_FILE))? {
            None => None,
            Some(text) => {
                let [term, node, index] = parse_numbers(text.trim_start_matches("purged "))
                    .ok_or_else(|| corrupt(PURGED_FILE, "not 'purged TERM NODE INDEX'"))?;
                Some(LogId::new(CommittedLeaderId::new(term, node), index))
            }
        };
        let path = dir.join(LOG_FILE);
        let io_err = |source| OpenError::Io {
            path: path.display().to_string(),
            source,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        if !existed {
            // The new file's entry is durable before any append to it is called durable.
            crate::storage::sync_dir(dir).map_err(io_err)?;
        }
        let bytes = std::fs::read(&path).map_err(io_err)?;
        let mut entries = BTreeMap::new();
        let mut purged_bytes = 0u64;
        let mut pos = 0usize;
        let mut next: Option<u64> = purged.map(|p| p.index + 1);
        while pos < bytes.len() {
            let (entry, len) = match decode_record(&bytes[pos..]) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(
                        "{}: {why} at byte {pos}; the log ends there (cut {} bytes)",
                        path.display(),
                        bytes.len() - pos
                    );
                    break;
                }
            };
            let index = entry.log_id.index;
            if purged.is_some_and(|p| index <= p.index) {
                purged_bytes += len as u64;
            } else if next.is_some_and(|n| n != index) {
                tracing::warn!(
                    "{}: entry {index} at byte {pos} does not follow {next:?}; the log ends there",
                    path.display()
                );
                break;
            } else {
                entries.insert(index, (pos as u64, len as u64, entry));
                next = Some(index + 1);
            }
            pos += len;
        }
        if pos < bytes.len() {
            file.set_len(pos as u64).map_err(io_err)?;
            file.sync_all().map_err(|e| io_err(fatal::sync_failed(e)))?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                file,
                end: pos as u64,
                entries,
                purged,
                purged_bytes,
                vote,
            })),
        })
    }

    // openraft's own error type, as its traits return it.
    #[allow(clippy::result_large_err)]
    fn lock(&self, write: bool) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| lock_err(write))
    }
}

impl Inner {
    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.entries
            .values()
            .next_back()
            .map(|(_, _, e)| e.log_id)
            .or(self.purged)
    }

    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = buf.len();
            encode_record(&entry, &mut buf)?;
            placed.push((self.end + start as u64, (buf.len() - start) as u64, entry));
        }
        self.file.write_all_at(&buf, self.end)?;
        self.file.sync_data().map_err(fatal::sync_failed)?;
        self.end += buf.len() as u64;
        for (pos, len, entry) in placed {
            self.entries.insert(entry.log_id.index, (pos, len, entry));
        }
        Ok(())
    }

    /// Removes entries at and after `index`: the file is cut at the first one's record.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(&(pos, _, _)) = self.entries.get(&index) else {
            return Ok(());
        };
        self.file.set_len(pos)?;
        self.file.sync_data().map_err(fatal::sync_failed)?;
        self.end = pos;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<u64>) -> std::result::Result<(), String> {
        checkpoint::write(
            &self.dir.join(PURGED_FILE),
            &format!("purged {}\n", log_id_text(&log_id)),
        )
        .map_err(|e| e.to_string())?;
        self.purged = Some(log_id);
        let kept = self.entries.split_off(&(log_id.index + 1));
        self.purged_bytes += self.entries.values().map(|(_, len, _)| len).sum::<u64>();
        self.entries = kept;
        let live_bytes = self.end - self.purged_bytes;
        if self.entries.is_empty()
            || (self.purged_bytes >= REWRITE_BYTES_MIN && self.purged_bytes > live_bytes)
        {
            self.rewrite().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Replaces the file by one holding only the live entries.
    fn rewrite(&mut self) -> io::Result<()> {
        let path = self.dir.join(LOG_FILE);
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(self.entries.len());
        // Positions only: the entries stay where they are until the new file is in place, so a
        // failed rewrite leaves the log as it was.
        for (&index, (_, _, entry)) in &self.entries {
            let start = buf.len();
            encode_record(entry, &mut buf)?;
            placed.push((index, start as u64, (buf.len() - start) as u64));
        }
        let file = File::create(&tmp)?;
        file.write_all_at(&buf, 0)?;
        file.sync_all().map_err(fatal::sync_failed)?;
        std::fs::rename(&tmp, &path)?;
        crate::storage::sync_dir(&self.dir).map_err(fatal::sync_failed)?;
        self.file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.end = buf.len() as u64;
        for (index, pos, len) in placed {
            if let Some(slot) = self.entries.get_mut(&index) {
                (slot.0, slot.1) = (pos, len);
            }
        }
        self.purged_bytes = 0;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let inner = self.lock(false)?;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (_, _, e))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let inner = self.lock(false)?;
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        let mut inner = self.lock(true)?;
        let body = format!(
            "vote {} {} {}\n",
            vote.leader_id.term,
            vote.leader_id.node_id,
            u8::from(vote.committed)
        );
        checkpoint::write(&inner.dir.join(VOTE_FILE), &body)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        Ok(self.lock(false)?.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock(true)?;
        // The controller log takes a few small writes a second: an fsync inline is fine here.
        match inner.append(entries.into_iter().collect()) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!("controller log append failed: {e}");
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut inner = self.lock(true)?;
        inner
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut inner = self.lock(true)?;
        inner
            .purge(log_id)
            .map_err(|e| StorageIOError::write_logs(AnyError::error(e)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::quorum::Batch;
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch(data.to_vec())),
        }
    }

    fn append(store: &LogStore, entries: Vec<Entry<TypeConfig>>) {
        store.inner.lock().unwrap().append(entries).unwrap();
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .inner
            .lock()
            .unwrap()
            .entries
            .keys()
            .copied()
            .collect()
    }

    #[tokio::test]
    async fn a_failed_rewrite_keeps_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let big = vec![7u8; 100 * 1024];
        append(&store, (1..=30).map(|i| entry(1, i, &big)).collect());
        // Purging 25 of 30 asks for a rewrite; its temp file cannot be created.
        std::fs::create_dir(dir.path().join(format!("{LOG_FILE}.tmp"))).unwrap();
        let purged = store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 25))
            .await;
        assert!(purged.is_err());
        assert_eq!(indexes(&store), vec![26, 27, 28, 29, 30]);
        let got = store.try_get_log_entries(26..31).await.unwrap();
        assert_eq!(got.len(), 5);
        // Once it can, the next purge rewrites, and a restart reads the same live entries.
        std::fs::remove_dir(dir.path().join(format!("{LOG_FILE}.tmp"))).unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 26))
            .await
            .unwrap();
        drop(store);
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![27, 28, 29, 30]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        append(&store, (0..5).map(|i| entry(1, i, b"hello")).collect());
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let full = std::fs::read(&path).unwrap();
        let record = full.len() / 5;

        // A torn last record: half of it reached the disk.
        std::fs::write(&path, &full[..full.len() - record / 2]).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1, 2, 3]);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 4 * record);
        // The log goes on after the cut.
        append(&store, vec![entry(1, 4, b"again")]);
        drop(store);
        assert_eq!(
            indexes(&LogStore::open(dir.path()).unwrap()),
            vec![0, 1, 2, 3, 4]
        );

        // A flipped byte in the third record: it and everything after it go.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2 * record + HEADER_BYTES + 1] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(indexes(&LogStore::open(dir.path()).unwrap()), vec![0, 1]);

        // Garbage that claims a huge length, and plain zeros.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0xff; 64]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(indexes(&LogStore::open(dir.path()).unwrap()), vec![0, 1]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(indexes(&LogStore::open(dir.path()).unwrap()), vec![0, 1]);
    }

    #[tokio::test]
    async fn vote_truncation_and_purge_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        store.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        append(&store, (0..10).map(|i| entry(1, i, b"x")).collect());
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
            .await
            .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new_committed(4, 1))
        );
        assert_eq!(indexes(&store), vec![3, 4, 5, 6]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(6));
        let got = store.try_get_log_entries(4..6).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![4, 5]
        );

        // Purging past the end (a snapshot from the leader) empties the file; appends continue.
        store
            .purge(LogId::new(CommittedLeaderId::new(2, 1), 20))
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0
        );
        append(&store, vec![entry(2, 21, b"y")]);
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![21]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(21));

        // A corrupt vote refuses the start instead of forgetting whom this node voted for.
        let vote = dir.path().join(VOTE_FILE);
        let mut bytes = std::fs::read(&vote).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&vote, bytes).unwrap();
        assert!(LogStore::open(dir.path()).is_err());
    }
}
