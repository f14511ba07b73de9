//! Cluster metadata: the topics, their ids, partition counts and configuration overrides.
//!
//! On a single node this is a checkpoint file (`meta/topics`) that every change rewrites
//! atomically before it is acknowledged; the Raft controller quorum (DESIGN.md) will replace the
//! file with a replicated metadata log holding the same records.
//!
//! What that log will carry is built here already, pure and not yet on the serving path:
//! `records` (the metadata records, their checksummed batch and snapshot encoding), `image`
//! (`MetadataImage`, applied records and the deltas they make), `upgrade` (this file's contents
//! as the first records). `placement` (replica placement, checks of new topics) serves today.
//!
//! Invariants:
//! - topic names are valid Kafka names and unique; topic ids are unique and never reused;
//! - partition counts only grow;
//! - a change is durable (the checkpoint replaced and fsynced) before the caller sees it succeed.

pub mod duties;
pub mod image;
pub mod member;
pub mod placement;
pub mod quorum;
pub mod records;
pub mod upgrade;
pub mod view;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::config::TopicOverrides;
use crate::storage::checkpoint::{self, CheckpointError};

/// Longest topic name Kafka allows.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// One topic as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub overrides: TopicOverrides,
}

/// Why a topic name is refused (Kafka: INVALID_TOPIC_EXCEPTION).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' has the character {c:?}; only [a-zA-Z0-9._-] are legal"
        ));
    }
    Ok(())
}

/// A fresh random id. Topic ids need uniqueness, not cryptographic strength: SipHash keys drawn
/// per process plus the clock and a counter give that without another dependency.
pub fn random_uuid() -> Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    let bits = (u128::from(word(1)) << 64) | u128::from(word(2));
    uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid()
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "{path} is missing but {partition} holds partition data: refusing to start rather than \
         guess (nothing was deleted). Restore {path} from a backup, or move the partition \
         directories out of the data directory to start empty"
    )]
    MissingWithData { path: String, partition: String },
    #[error("{path}: line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The topics of the cluster, persisted in `<data>/meta/topics`.
pub struct MetadataStore {
    path: PathBuf,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
}

impl MetadataStore {
    /// Loads (or creates) the store under `data_dir/meta`.
    pub fn open(data_dir: &Path) -> Result<MetadataStore, MetadataError> {
        let dir = data_dir.join("meta");
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("topics");
        let mut store = MetadataStore {
            path,
            cluster_id: String::new(),
            topics: BTreeMap::new(),
        };
        match checkpoint::read(&store.path)? {
            Some(text) => store.parse(&text)?,
            None => {
                // A new data directory has no partitions; one that has them lost its metadata,
                // and starting empty would delete them all as orphans.
                if let Some(partition) = partition_with_data(data_dir) {
                    return Err(MetadataError::MissingWithData {
                        path: store.path.display().to_string(),
                        partition,
                    });
                }
                store.cluster_id = cluster_id_from(random_uuid());
                store.persist()?;
            }
        }
        Ok(store)
    }

    /// The store of a data directory that ran as a single node before the quorum: `None` when
    /// there is no `meta/topics` (a new directory, or one already upgraded). A directory with
    /// partition data but neither `meta/topics` nor a metadata log lost its metadata: refused,
    /// since starting empty would delete every partition as an orphan.
    pub fn open_existing(data_dir: &Path) -> Result<Option<MetadataStore>, MetadataError> {
        let path = data_dir.join("meta").join("topics");
        if path.exists() {
            return MetadataStore::open(data_dir).map(Some);
        }
        // A metadata log directory without its log (emptied by hand) is no better than none.
        if !data_dir.join("controller").join("raft.log").exists() {
            if let Some(partition) = partition_with_data(data_dir) {
                return Err(MetadataError::MissingWithData {
                    path: path.display().to_string(),
                    partition,
                });
            }
        }
        Ok(None)
    }

    /// Renames the file to `meta/topics.upgraded` (durably) once its records are in the
    /// metadata log: kept for a person to read, never read again by the broker.
    pub fn retire(self) -> Result<(), MetadataError> {
        let io = |source: std::io::Error| CheckpointError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let retired = self.path.with_file_name("topics.upgraded");
        std::fs::rename(&self.path, &retired).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            crate::storage::sync_dir(dir).map_err(io)?;
        }
        Ok(())
    }

    fn parse(&mut self, text: &str) -> Result<(), MetadataError> {
        let err = |line: usize, reason: &str| MetadataError::Parse {
            path: self.path.display().to_string(),
            line,
            reason: reason.to_string(),
        };
        for (i, line) in text.lines().enumerate() {
            let mut fields = line.split('\t');
            match fields.next() {
                Some("cluster") => {
                    self.cluster_id = fields
                        .next()
                        .ok_or_else(|| err(i + 1, "no cluster id"))?
                        .to_string()
                }
                Some("topic") => {
                    let name = fields
                        .next()
                        .ok_or_else(|| err(i + 1, "no name"))?
                        .to_string();
                    let id = fields
                        .next()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .ok_or_else(|| err(i + 1, "bad id"))?;
                    let partitions = fields
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| err(i + 1, "bad partition count"))?;
                    let mut overrides = BTreeMap::new();
                    for kv in fields {
                        let (k, v) = kv.split_once('=').ok_or_else(|| err(i + 1, "bad config"))?;
                        overrides.insert(k.to_string(), v.to_string());
                    }
                    let meta = TopicMeta {
                        name: name.clone(),
                        id,
                        partitions,
                        overrides: TopicOverrides(overrides),
                    };
                    self.topics.insert(name, meta);
                }
                _ => return Err(err(i + 1, "unknown record")),
            }
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), MetadataError> {
        let mut text = format!("cluster\t{}\n", self.cluster_id);
        for t in self.topics.values() {
            let _ = write!(text, "topic\t{}\t{}\t{}", t.name, t.id, t.partitions);
            for (k, v) in &t.overrides.0 {
                let _ = write!(text, "\t{k}={v}");
            }
            text.push('\n');
        }
        checkpoint::write(&self.path, &text)?;
        Ok(())
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// Records a new topic durably. The caller checked the name and that it does not exist.
    pub fn create_topic(&mut self, meta: TopicMeta) -> Result<(), MetadataError> {
        assert!(!self.topics.contains_key(&meta.name), "topic exists");
        assert!(meta.partitions > 0);
        self.topics.insert(meta.name.clone(), meta);
        self.persist()
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<Option<TopicMeta>, MetadataError> {
        let removed = self.topics.remove(name);
        if removed.is_some() {
            self.persist()?;
        }
        Ok(removed)
    }

    /// Replaces a topic's configuration overrides durably. The caller validated them.
    pub fn set_overrides(
        &mut self,
        name: &str,
        overrides: TopicOverrides,
    ) -> Result<(), MetadataError> {
        if let Some(t) = self.topics.get_mut(name) {
            t.overrides = overrides;
        }
        self.persist()
    }

    pub fn set_partitions(&mut self, name: &str, partitions: i32) -> Result<(), MetadataError> {
        if let Some(t) = self.topics.get_mut(name) {
            assert!(partitions >= t.partitions, "partition counts only grow");
            t.partitions = partitions;
        }
        self.persist()
    }
}

/// Kafka cluster ids are 22-character URL-safe base64 of a UUID.
pub(crate) fn cluster_id_from(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = id.as_u128();
    (0..22i32)
        .map(|i| {
            // 22 six-bit digits cover 132 bits: the last digit holds the low 2 bits, padded.
            let shift = 122 - 6 * i;
            let digit = if shift >= 0 {
                bits >> shift
            } else {
                bits << -shift
            };
            ALPHABET[(digit & 0x3f) as usize] as char
        })
        .collect()
}

/// The first directory of `data_dir` (other than `meta`) that holds a segment file.
fn partition_with_data(data_dir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(data_dir).ok()?;
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "meta" || name == "controller" || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            return None;
        }
        let files = std::fs::read_dir(entry.path()).ok()?;
        files
            .flatten()
            .any(|f| f.file_name().to_string_lossy().ends_with(".log"))
            .then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_topics_file_with_partition_data_present_refuses_to_start_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let partition = dir.path().join("orders-0");
        std::fs::create_dir(&partition).unwrap();
        let segment = partition.join("00000000000000000000.log");
        std::fs::write(&segment, b"acknowledged records").unwrap();
        let err = MetadataStore::open(dir.path())
            .err()
            .expect("a missing meta/topics beside partition data must not look like a new broker");
        let message = err.to_string();
        assert!(
            message.contains("meta/topics") && message.contains("orders-0"),
            "{message}"
        );
        assert!(segment.exists());
        assert!(
            !dir.path().join("meta/topics").exists(),
            "nothing was written"
        );
    }

    #[test]
    fn topics_survive_reopening_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let cluster = store.cluster_id().to_string();
        assert_eq!(cluster.len(), 22);
        let overrides = TopicOverrides::parse([("retention.ms", "1000")]).unwrap();
        let id = random_uuid();
        store
            .create_topic(TopicMeta {
                name: "orders".into(),
                id,
                partitions: 3,
                overrides,
            })
            .unwrap();
        store.set_partitions("orders", 5).unwrap();
        drop(store);
        let store = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster_id(), cluster);
        let t = store.topic("orders").unwrap();
        assert_eq!((t.id, t.partitions), (id, 5));
        assert_eq!(
            t.overrides.0.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_ne!(random_uuid(), random_uuid());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
        validate_topic_name("ok.name_-1").unwrap();
    }
}
