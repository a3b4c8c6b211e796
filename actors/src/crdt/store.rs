//! Where a node keeps its CRDT state between runs.
//!
//! One file, rewritten whole and renamed into place, so a crash leaves the old copy or
//! the new one and never half of each. A checksum catches damage; a damaged file is set
//! aside (renamed, never deleted) and the node starts empty, because unlike the ledger
//! this state is recoverable: anti-entropy fetches it back from the neighbors.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use x0_protocols::crdt::SignedEntry;

const MAGIC: &[u8; 8] = b"X0CRDT1\0";

#[derive(Debug, thiserror::Error)]
pub enum CrdtStoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a CRDT state file, or damaged (checksum mismatch)")]
    Damaged(String),
}

/// A file in the node's data directory, or memory the simulator keeps across a
/// simulated crash (the disk survives a crash; only the process dies).
#[derive(Clone, Debug)]
pub enum CrdtStore {
    File(PathBuf),
    /// The entries themselves: immutable once signed, so keeping them costs no copy.
    Memory(Arc<Mutex<Vec<Arc<SignedEntry>>>>),
}

impl CrdtStore {
    pub fn memory() -> CrdtStore {
        CrdtStore::Memory(Arc::default())
    }

    fn name(&self) -> String {
        match self {
            CrdtStore::File(path) => path.display().to_string(),
            CrdtStore::Memory(_) => "memory".into(),
        }
    }

    /// The saved entries; none if nothing was saved yet.
    pub fn load(&self) -> Result<Vec<SignedEntry>, CrdtStoreError> {
        let bytes = match self {
            CrdtStore::File(path) => match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => {
                    return Err(CrdtStoreError::Io {
                        path: self.name(),
                        source,
                    });
                }
            },
            CrdtStore::Memory(saved) => {
                return Ok(saved
                    .lock()
                    .map(|s| s.iter().map(|e| (**e).clone()).collect())
                    .unwrap_or_default());
            }
        };
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        decode(&bytes).ok_or_else(|| CrdtStoreError::Damaged(self.name()))
    }

    pub fn save(&self, entries: &[Arc<SignedEntry>]) -> Result<(), CrdtStoreError> {
        match self {
            CrdtStore::File(path) => {
                let bytes = encode(entries);
                let io = |source| CrdtStoreError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let temporary = path.with_extension("tmp");
                std::fs::write(&temporary, &bytes).map_err(io)?;
                std::fs::File::open(&temporary)
                    .and_then(|f| f.sync_all())
                    .map_err(io)?;
                std::fs::rename(&temporary, path).map_err(io)
            }
            CrdtStore::Memory(saved) => {
                if let Ok(mut saved) = saved.lock() {
                    *saved = entries.to_vec();
                }
                Ok(())
            }
        }
    }

    /// Moves a damaged file out of the way (kept for inspection) and says where.
    pub fn set_aside(&self) -> Option<PathBuf> {
        match self {
            CrdtStore::File(path) => {
                let aside = path.with_extension("damaged");
                std::fs::rename(path, &aside).ok().map(|()| aside)
            }
            CrdtStore::Memory(saved) => {
                if let Ok(mut saved) = saved.lock() {
                    saved.clear();
                }
                None
            }
        }
    }
}

fn encode(entries: &[Arc<SignedEntry>]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    // Owned data into a Vec: cannot fail.
    bytes.extend(postcard::to_stdvec(entries).unwrap_or_default());
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Vec<SignedEntry>> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, checksum) = bytes.split_at(body_len);
    if !body.starts_with(MAGIC) || Sha256::digest(body).as_slice() != checksum {
        return None;
    }
    postcard::from_bytes(&body[MAGIC.len()..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0_protocols::Identity;
    use x0_protocols::crdt::{Entry, Key};

    fn entry(i: u8) -> SignedEntry {
        let identity = Identity::from_seed([i; 32]);
        Entry {
            key: Key::new("app", vec![i]),
            writer: identity.id(),
            stamp: u64::from(i),
            value: Some(vec![i; 3]),
        }
        .sign(&identity)
    }

    #[test]
    fn a_saved_state_loads_back_and_damage_is_detected_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crdt.bin");
        let store = CrdtStore::File(path.clone());
        assert!(store.load().unwrap().is_empty());
        let entries = [entry(1), entry(2)];
        store
            .save(&entries.iter().cloned().map(Arc::new).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(store.load().unwrap(), entries.to_vec());

        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(store.load(), Err(CrdtStoreError::Damaged(_))));
        let aside = store.set_aside().unwrap();
        assert!(aside.exists());
        assert!(store.load().unwrap().is_empty());

        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(store.load(), Err(CrdtStoreError::Damaged(_))));
    }
}
