//! Fingerprints: what a stage's output depends on, reduced to one hash. A stage whose
//! fingerprint matches its finished output's is up to date; any change — a config key, an
//! option such as `--strict`, the task split, a byte of an input file (same size or not), a
//! referenced file (IPC scheme, tokenizer, `dataset_info.json`) — gives another fingerprint and
//! a rebuild.
//!
//! Input files are fingerprinted by size and a streaming xxh3-128 of their bytes (hashed in
//! parallel). Reading every input again costs far less than parsing it: measured in the README
//! (section "Building at scale"), an unchanged rerun is skipped in a small fraction of the
//! build time, so no size/mtime shortcut (which an edit that keeps both would defeat) is taken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::fsio::{hex, xxh3_file};
use crate::error::Result;

/// sha256 of the canonical JSON form of a value (a config section, a listing), as hex.
pub fn hash_of<T: Serialize + ?Sized>(value: &T) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).expect("value serializes");
    hex(&sha2::Sha256::digest(&bytes))
}

/// Size and content hash of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// The path as given (configs name inputs relative to the working directory).
    pub path: String,
    /// Bytes read.
    pub bytes: u64,
    /// xxh3-128 of the bytes, hex.
    pub xxh3: String,
}

impl FileDigest {
    /// Reads and hashes `path`.
    pub fn of(path: &Path) -> Result<FileDigest> {
        let (bytes, xxh3) = xxh3_file(path)?;
        Ok(FileDigest { path: path.display().to_string(), bytes, xxh3 })
    }
}

/// Digests of many input files, hashed in parallel, in the given order. An input that is not a
/// regular file (a FIFO, socket or device, which the readers count as `not-a-file` and never
/// open: opening a FIFO would block) or cannot be read (a dangling link, no permission: the
/// readers count that error) is recorded by what it is, not opened and not a failure.
pub fn digest_files(files: &[PathBuf]) -> Result<Vec<FileDigest>> {
    files
        .par_iter()
        .map(|p| {
            let unreadable = |what: String| Ok(FileDigest { path: p.display().to_string(), bytes: 0, xxh3: what });
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => FileDigest::of(p).or_else(|e| unreadable(format!("unreadable: {e}"))),
                Ok(m) => unreadable(format!("not a file: {:?}", m.file_type())),
                Err(e) => unreadable(format!("unreadable: {}", e.kind())),
            }
        })
        .collect()
}

/// Named parts of everything an output depends on; [`Fingerprint::hash`] reduces them to the
/// manifest's `config_hash`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fingerprint {
    parts: BTreeMap<String, serde_json::Value>,
}

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a serializable part (a config section, an option, the task split).
    pub fn with<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Self {
        self.parts.insert(name.to_string(), serde_json::to_value(value).expect("fingerprint part serializes"));
        self
    }

    /// Adds the size and content of each file (hashed in parallel).
    pub fn with_files(self, name: &str, files: &[PathBuf]) -> Result<Self> {
        let d = digest_files(files)?;
        Ok(self.with(name, &d))
    }

    /// Adds one referenced file by content; an empty path is recorded as absent.
    pub fn with_file(self, name: &str, path: &Path) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Ok(self.with(name, &None::<FileDigest>));
        }
        let d = FileDigest::of(path)?;
        Ok(self.with(name, &Some(d)))
    }

    /// The hash of all parts (sha256 of their canonical JSON).
    pub fn hash(&self) -> String {
        hash_of(&self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_size_edit_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.jsonl");
        std::fs::write(&f, "{\"text\":\"abc\"}\n").unwrap();
        let fp = || Fingerprint::new().with("cfg", &1).with_files("inputs", std::slice::from_ref(&f)).unwrap().hash();
        let a = fp();
        assert_eq!(a, fp());
        std::fs::write(&f, "{\"text\":\"abd\"}\n").unwrap();
        assert_ne!(a, fp());
        assert_ne!(fp(), Fingerprint::new().with("cfg", &2).with_files("inputs", std::slice::from_ref(&f)).unwrap().hash());
    }
}
