//! External sort: workers spill sorted runs of records to disk, and a k-way merge (multi-pass
//! above a fan-in limit) streams them back in order, so memory stays bounded by the run buffer
//! and the fan-in, never by the corpus. Used for LSH bucket entries (fixed 32-byte [`Entry`]) and
//! by the cluster step for its variable-length member and decision records ([`Sorter`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A record that can be spilled to a run file: ordered by `Ord`, encoded to bytes and back.
pub trait Record: Ord + Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes the next record; `Ok(None)` at a clean end of input, an error (of kind
    /// `UnexpectedEof`) for a partial record.
    fn decode(r: &mut impl BufRead) -> std::io::Result<Option<Self>>;
    /// Approximate bytes the record takes in memory (for the sort buffer budget).
    fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// One bucket entry: documents with equal `key` (a band's xxh3-128, or the exact-text key) are
/// candidates; `gidx` is the document's global index. (Which member of a bucket the others
/// are paired with does not matter: the cluster step works on the connected groups.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Bucket key.
    pub key: u128,
    /// Global document index.
    pub gidx: u64,
}

/// Bytes of one encoded entry.
pub const ENTRY_BYTES: usize = 24;

impl Record for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.gidx.to_le_bytes());
    }
    fn decode(r: &mut impl BufRead) -> std::io::Result<Option<Self>> {
        let mut b = [0u8; ENTRY_BYTES];
        if !read_exact_or_end(r, &mut b)? {
            return Ok(None);
        }
        Ok(Some(Entry { key: u128::from_le_bytes(b[..16].try_into().unwrap()), gidx: u64::from_le_bytes(b[16..].try_into().unwrap()) }))
    }
}

/// Fills `buf` from `r`: `Ok(false)` when the input ends before its first byte, an
/// `UnexpectedEof` error when it ends inside it.
pub fn read_exact_or_end(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("truncated record ({got} of {} bytes)", buf.len()),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sorts `records` and writes them as one run file (atomically).
pub fn write_run<R: Record>(path: &Path, records: &mut [R]) -> Result<()> {
    records.sort_unstable();
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let tmp = crate::core::fsio::tmp_path(path);
    let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 16, f);
    let mut buf = Vec::new();
    for r in records.iter() {
        buf.clear();
        r.encode(&mut buf);
        w.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
    }
    let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a run file record by record.
pub struct RunReader<R> {
    path: PathBuf,
    r: BufReader<File>,
    _r: std::marker::PhantomData<R>,
}

impl<R: Record> RunReader<R> {
    /// Opens a run file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), r: BufReader::with_capacity(1 << 16, f), _r: std::marker::PhantomData })
    }

    /// The next record, `None` at the end; a truncated file is an error naming it.
    pub fn next_entry(&mut self) -> Result<Option<R>> {
        R::decode(&mut self.r).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Other(format!("{}: truncated run file ({e})", self.path.display())),
            _ => Error::io(&self.path, e),
        })
    }
}

/// A k-way merge of sorted runs.
pub struct Merge<R> {
    readers: Vec<RunReader<R>>,
    heap: BinaryHeap<Reverse<(R, usize)>>,
}

impl<R: Record> Merge<R> {
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

    /// The next record in sorted order.
    pub fn next_entry(&mut self) -> Result<Option<R>> {
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
pub fn merge_runs<R: Record>(paths: &[PathBuf], fan_in: usize, tmp_dir: &Path) -> Result<Merge<R>> {
    let fan_in = fan_in.max(2);
    let mut level: Vec<PathBuf> = paths.to_vec();
    let mut pass = 0;
    let mut created: Vec<PathBuf> = Vec::new();
    while level.len() > fan_in {
        let mut next = Vec::new();
        for (g, group) in level.chunks(fan_in).enumerate() {
            let out = tmp_dir.join(format!("merge-{pass}-{g:05}.run"));
            let mut m = Merge::<R>::new(group)?;
            std::fs::create_dir_all(tmp_dir).map_err(|e| Error::io(tmp_dir, e))?;
            let f = File::create(&out).map_err(|e| Error::io(&out, e))?;
            let mut w = BufWriter::with_capacity(1 << 16, f);
            let mut buf = Vec::new();
            while let Some(e) = m.next_entry()? {
                buf.clear();
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

/// An external sorter: records are buffered up to `budget_bytes`, spilled as sorted runs under
/// `dir` when the buffer is full, and streamed back in order by [`Sorter::finish`] (from memory
/// when nothing was spilled). Run files are private to the sorter and removed as they are read.
pub struct Sorter<R> {
    dir: PathBuf,
    budget_bytes: usize,
    fan_in: usize,
    buf: Vec<R>,
    used: usize,
    runs: Vec<PathBuf>,
}

impl<R: Record> Sorter<R> {
    /// A sorter spilling into `dir` (created on the first spill; it should be empty or absent).
    pub fn new(dir: &Path, budget_bytes: usize, fan_in: usize) -> Self {
        Self { dir: dir.to_path_buf(), budget_bytes: budget_bytes.max(1), fan_in, buf: Vec::new(), used: 0, runs: Vec::new() }
    }

    /// Adds a record.
    pub fn push(&mut self, r: R) -> Result<()> {
        self.used += r.mem_bytes();
        self.buf.push(r);
        if self.used >= self.budget_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Runs spilled so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let p = self.dir.join(format!("run-{:05}.run", self.runs.len()));
        write_run(&p, &mut self.buf)?;
        self.runs.push(p);
        self.buf = Vec::new();
        self.used = 0;
        Ok(())
    }

    /// The records in sorted order.
    pub fn finish(mut self) -> Result<Sorted<R>> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            return Ok(Sorted::Memory(std::mem::take(&mut self.buf).into_iter()));
        }
        self.spill()?;
        let m = merge_runs(&self.runs, self.fan_in, &self.dir.join("merge"))?;
        // The merge holds the files open; their names can go now.
        for p in &self.runs {
            let _ = std::fs::remove_file(p);
        }
        Ok(Sorted::Disk(m))
    }
}

/// The sorted output of a [`Sorter`].
pub enum Sorted<R> {
    /// Everything fit in the buffer.
    Memory(std::vec::IntoIter<R>),
    /// A merge of spilled runs.
    Disk(Merge<R>),
}

impl<R: Record> Sorted<R> {
    /// The next record in order.
    pub fn next_entry(&mut self) -> Result<Option<R>> {
        match self {
            Sorted::Memory(it) => Ok(it.next()),
            Sorted::Disk(m) => m.next_entry(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_pass_merge_is_sorted_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::core::rng::SplitMix64::new(9);
        let mut all = Vec::new();
        let mut paths = Vec::new();
        for r in 0..7 {
            let mut run: Vec<Entry> = (0..50).map(|_| Entry { key: (rng.below(20)) as u128, gidx: rng.next_u64() }).collect();
            all.extend(run.iter().cloned());
            let p = dir.path().join(format!("r{r}.run"));
            write_run(&p, &mut run).unwrap();
            paths.push(p);
        }
        all.sort();
        let mut m = merge_runs::<Entry>(&paths, 3, &dir.path().join("tmp")).unwrap();
        let mut got = Vec::new();
        while let Some(e) = m.next_entry().unwrap() {
            got.push(e);
        }
        assert_eq!(got, all);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "intermediate runs removed");
    }

    /// A budget far below the input: many runs, a multi-pass merge, the same order as an
    /// in-memory sort, and no files left behind.
    #[test]
    fn sorter_spills_and_merges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::core::rng::SplitMix64::new(4);
        let all: Vec<Entry> = (0..5000).map(|i| Entry { key: rng.below(300) as u128, gidx: i }).collect();
        for budget in [1 << 30, 4096] {
            let mut s = Sorter::new(&dir.path().join("s"), budget, 4);
            for e in &all {
                s.push(*e).unwrap();
            }
            assert_eq!(s.spilled_runs() > 10, budget == 4096);
            let mut sorted = s.finish().unwrap();
            let mut got = Vec::new();
            while let Some(e) = sorted.next_entry().unwrap() {
                got.push(e);
            }
            let mut want = all.clone();
            want.sort();
            assert_eq!(got, want);
            drop(sorted);
            let left: Vec<_> = walk(&dir.path().join("s"));
            assert!(left.is_empty(), "{left:?}");
        }
    }

    fn walk(d: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    out.extend(walk(&e.path()));
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn truncated_run_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.run");
        std::fs::write(&p, [0u8; 30]).unwrap();
        let mut r = RunReader::<Entry>::open(&p).unwrap();
        assert!(r.next_entry().unwrap().is_some());
        let e = r.next_entry().unwrap_err().to_string();
        assert!(e.contains("bad.run") && e.contains("truncated"), "{e}");
    }
}
