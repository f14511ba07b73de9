//! Test only: a shadow of what a disk would keep at a power cut, fed by hooks at every point where
//! storage makes something durable or changes a directory (msync of a range, fsync of a file or a
//! directory, create, rename, remove). Production keeps its real `mmap`/`pwritev` path; these
//! hooks only record, and [`cut`] rewrites a directory to what the shadow says survived.
//!
//! The model is the strict POSIX one: written bytes live in the page cache until an msync/fsync
//! covers them; a file's name exists on disk only once its directory was fsynced after the
//! create or rename; a file that was never synced is empty. At a cut, pages never synced may
//! still have been written back by the kernel (kept at random, whole or torn), as on real disks.
//!
//! Invariant: the hooks do nothing for paths outside a directory passed to [`track`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PAGE_BYTES: usize = 4096;

#[derive(Default)]
struct Shadow {
    root: PathBuf,
    next_id: u64,
    /// Live path → file identity (follows renames, like an inode).
    current: HashMap<PathBuf, u64>,
    /// The directory's entries as of its last fsync.
    durable_names: HashMap<OsString, u64>,
    /// What is on disk of each file (its length is the durable length).
    content: HashMap<u64, Vec<u8>>,
    /// Every msync/fsync fails (a dying disk), until turned off.
    failing: bool,
}

static SHADOWS: Mutex<Vec<Shadow>> = Mutex::new(Vec::new());

fn with_shadow<R>(path: &Path, f: impl FnOnce(&mut Shadow) -> R) -> Option<R> {
    let mut shadows = SHADOWS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = path.parent()?;
    shadows.iter_mut().find(|s| s.root == dir).map(f)
}

/// Starts shadowing the (empty) directory `root`: files directly inside it.
pub fn track(root: &Path) {
    let mut shadows = SHADOWS.lock().unwrap_or_else(|p| p.into_inner());
    shadows.retain(|s| s.root != root);
    shadows.push(Shadow {
        root: root.to_path_buf(),
        ..Default::default()
    });
}

impl Shadow {
    fn id_of(&mut self, path: &Path) -> u64 {
        if let Some(id) = self.current.get(path) {
            return *id;
        }
        // Created without a hook (should not happen in storage): never synced, so empty.
        let id = self.next_id;
        self.next_id += 1;
        self.current.insert(path.to_path_buf(), id);
        self.content.insert(id, Vec::new());
        id
    }
}

/// Makes every later sync under `root` fail (or work again): the disk's error, as the kernel
/// reports it after losing dirty pages.
pub fn fail_syncs(root: &Path, failing: bool) {
    let mut shadows = SHADOWS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = shadows.iter_mut().find(|s| s.root == root) {
        s.failing = failing;
    }
}

/// Whether a sync of `path` must fail (see [`fail_syncs`]); the sync then records nothing.
pub fn sync_fails(path: &Path) -> bool {
    with_shadow(path, |s| s.failing).unwrap_or(false)
}

/// A file was created at `path` (empty on disk until synced).
pub fn created(path: &Path) {
    with_shadow(path, |s| {
        s.current.remove(path);
        s.id_of(path);
    });
}

/// `msync` (a data sync) of `[from, from + len)`: those bytes and the file's length are on disk.
pub fn synced_range(path: &Path, from: usize, len: usize) {
    with_shadow(path, |s| {
        let id = s.id_of(path);
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        let file_len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let content = s.content.entry(id).or_default();
        content.resize(file_len, 0);
        let to = (from + len).min(file_len);
        if from < to {
            let _ = file.read_exact_at(&mut content[from..to], from as u64);
        }
    });
}

/// `fsync` of a whole file: its bytes and length are on disk.
pub fn synced_file(path: &Path) {
    with_shadow(path, |s| {
        let id = s.id_of(path);
        let bytes = std::fs::read(path).unwrap_or_default();
        s.content.insert(id, bytes);
    });
}

/// `fsync` of the directory `dir`: its entries as they are now are on disk.
pub fn synced_dir(dir: &Path) {
    let mut shadows = SHADOWS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = shadows.iter_mut().find(|s| s.root == dir) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names = HashMap::new();
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let id = s.id_of(&entry.path());
            names.insert(entry.file_name(), id);
        }
    }
    s.durable_names = names;
}

pub fn renamed(from: &Path, to: &Path) {
    with_shadow(to, |s| {
        if let Some(id) = s.current.remove(from) {
            s.current.insert(to.to_path_buf(), id);
        }
    });
}

pub fn removed(path: &Path) {
    with_shadow(path, |s| {
        s.current.remove(path);
    });
}

/// A tiny deterministic generator (splitmix64): cuts are reproducible from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Cuts the power under `root`: every file there becomes what the shadow says the disk held,
/// plus (at random) unsynced pages the kernel may have written back, some torn. Nothing may hold
/// a file of `root` open or mapped. Afterwards the shadow equals the directory.
pub fn cut(root: &Path, rng: &mut Rng) {
    let mut shadows = SHADOWS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = shadows.iter_mut().find(|s| s.root == root) else {
        panic!("{} is not tracked", root.display());
    };
    let mut survivors = Vec::new();
    let mut names: Vec<_> = s
        .durable_names
        .iter()
        .map(|(n, i)| (n.clone(), *i))
        .collect();
    names.sort();
    for (name, id) in names {
        let path = root.join(&name);
        let mut bytes = s.content.get(&id).cloned().unwrap_or_default();
        if s.current.get(&path) == Some(&id) {
            let now = std::fs::read(&path).unwrap_or_default();
            written_back(&mut bytes, &now, rng);
        }
        survivors.push((path, id, bytes));
    }
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    s.current.clear();
    s.content.clear();
    for (path, id, bytes) in survivors {
        std::fs::write(&path, &bytes).unwrap();
        s.current.insert(path, id);
        s.content.insert(id, bytes);
    }
}

/// Pages of `now` that differ from the disk's `bytes` reach it at random: a quarter whole, an
/// eighth torn at a random byte.
fn written_back(bytes: &mut Vec<u8>, now: &[u8], rng: &mut Rng) {
    for start in (0..now.len()).step_by(PAGE_BYTES) {
        let end = (start + PAGE_BYTES).min(now.len());
        let same = bytes.len() >= end && bytes[start..end] == now[start..end];
        if same {
            continue;
        }
        let keep = match rng.below(8) {
            0 | 1 => end,
            2 => start + rng.below((end - start) as u64) as usize,
            _ => continue,
        };
        if bytes.len() < keep {
            bytes.resize(keep, 0);
        }
        bytes[start..keep].copy_from_slice(&now[start..keep]);
    }
}
