//! External sort of LSH bucket entries: workers spill sorted runs of fixed-size records to
//! disk, and a k-way merge (multi-pass above a fan-in limit) streams them back in order, so
//! memory stays bounded by the run buffer and the fan-in, never by the corpus.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One bucket entry: documents with equal `key` (a band's xxh3-128, or the exact-text key) are
/// candidates; `order` (xxh3 of the id) fixes the order inside a bucket independently of the
/// input order; `gidx` is the document's global index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Bucket key.
    pub key: u128,
    /// Order inside the bucket.
    pub order: u64,
    /// Global document index.
    pub gidx: u64,
}

/// Bytes of one encoded entry.
pub const ENTRY_BYTES: usize = 32;

impl Entry {
    fn encode(&self, out: &mut [u8; ENTRY_BYTES]) {
        out[..16].copy_from_slice(&self.key.to_le_bytes());
        out[16..24].copy_from_slice(&self.order.to_le_bytes());
        out[24..].copy_from_slice(&self.gidx.to_le_bytes());
    }
    fn decode(b: &[u8; ENTRY_BYTES]) -> Self {
        Entry {
            key: u128::from_le_bytes(b[..16].try_into().unwrap()),
            order: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            gidx: u64::from_le_bytes(b[24..].try_into().unwrap()),
        }
    }
}

/// Sorts `entries` and writes them as one run file (atomically).
pub fn write_run(path: &Path, entries: &mut [Entry]) -> Result<()> {
    entries.sort_unstable();
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let tmp = crate::core::fsio::tmp_path(path);
    let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 16, f);
    let mut buf = [0u8; ENTRY_BYTES];
    for e in entries.iter() {
        e.encode(&mut buf);
        w.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
    }
    let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a run file entry by entry.
pub struct RunReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl RunReader {
    /// Opens a run file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), r: BufReader::with_capacity(1 << 16, f) })
    }

    /// The next entry, `None` at the end; a truncated file is an error naming it.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let mut buf = [0u8; ENTRY_BYTES];
        let mut got = 0;
        while got < ENTRY_BYTES {
            let n = self.r.read(&mut buf[got..]).map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(Error::Other(format!("{}: truncated run file (entry of {got} bytes)", self.path.display())));
            }
            got += n;
        }
        Ok(Some(Entry::decode(&buf)))
    }
}

/// A k-way merge of sorted runs.
pub struct Merge {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(Entry, usize)>>,
}

impl Merge {
    fn new(paths: &[PathBuf]) -> Result<Self> {
        let mut readers = Vec::with_capacity(paths.len());
        let mut heap = BinaryHeap::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let mut r = RunReader::open(p)?;
            if let Some(e) = r.next_entry()? {
                heap.push(Reverse((e, i)));
            }
            readers.push(r);
        }
        Ok(Self { readers, heap })
    }

    /// The next entry in sorted order.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(Reverse((e, i))) = self.heap.pop() else { return Ok(None) };
        if let Some(n) = self.readers[i].next_entry()? {
            self.heap.push(Reverse((n, i)));
        }
        Ok(Some(e))
    }
}

/// Merges `paths` into one sorted stream, first merging groups of `fan_in` runs into
/// intermediate runs under `tmp_dir` while there are more than `fan_in` (bounded open files and
/// buffers). Intermediate runs are removed as they are consumed.
pub fn merge_runs(paths: &[PathBuf], fan_in: usize, tmp_dir: &Path) -> Result<Merge> {
    let fan_in = fan_in.max(2);
    let mut level: Vec<PathBuf> = paths.to_vec();
    let mut pass = 0;
    let mut created: Vec<PathBuf> = Vec::new();
    while level.len() > fan_in {
        let mut next = Vec::new();
        for (g, group) in level.chunks(fan_in).enumerate() {
            let out = tmp_dir.join(format!("merge-{pass}-{g:05}.run"));
            let mut m = Merge::new(group)?;
            std::fs::create_dir_all(tmp_dir).map_err(|e| Error::io(tmp_dir, e))?;
            let f = File::create(&out).map_err(|e| Error::io(&out, e))?;
            let mut w = BufWriter::with_capacity(1 << 16, f);
            let mut buf = [0u8; ENTRY_BYTES];
            while let Some(e) = m.next_entry()? {
                e.encode(&mut buf);
                w.write_all(&buf).map_err(|e| Error::io(&out, e))?;
            }
            w.flush().map_err(|e| Error::io(&out, e))?;
            next.push(out);
        }
        for p in &level {
            if created.contains(p) {
                let _ = std::fs::remove_file(p);
            }
        }
        created.extend(next.iter().cloned());
        level = next;
        pass += 1;
    }
    let m = Merge::new(&level)?;
    // Open handles keep the data readable; the names can go now (Unix semantics).
    for p in &level {
        if created.contains(p) {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_pass_merge_is_sorted_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::dedup::minhash::SplitMix64(9);
        let mut all = Vec::new();
        let mut paths = Vec::new();
        for r in 0..7 {
            let mut run: Vec<Entry> =
                (0..50).map(|i| Entry { key: (rng.below(20)) as u128, order: rng.next_u64(), gidx: r * 100 + i }).collect();
            all.extend(run.iter().cloned());
            let p = dir.path().join(format!("r{r}.run"));
            write_run(&p, &mut run).unwrap();
            paths.push(p);
        }
        all.sort();
        let mut m = merge_runs(&paths, 3, &dir.path().join("tmp")).unwrap();
        let mut got = Vec::new();
        while let Some(e) = m.next_entry().unwrap() {
            got.push(e);
        }
        assert_eq!(got, all);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "intermediate runs removed");
    }

    #[test]
    fn truncated_run_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.run");
        std::fs::write(&p, [0u8; 40]).unwrap();
        let mut r = RunReader::open(&p).unwrap();
        assert!(r.next_entry().unwrap().is_some());
        let e = r.next_entry().unwrap_err().to_string();
        assert!(e.contains("bad.run") && e.contains("truncated"), "{e}");
    }
}
