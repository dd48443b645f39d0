//! The global shuffle of rows, in bounded memory (a two-pass external shuffle):
//!
//! 1. While packing, rows are collected into chunks of about `chunk_rows` rows; each chunk is
//!    shuffled in memory (Fisher–Yates, seeded by (seed, chunk number)) and written to a temp
//!    file.
//! 2. The chunks are then interleaved: each next row is taken from chunk `i` with probability
//!    `remaining_i / remaining_total` (one seeded stream for the whole build).
//!
//! Guarantee: the output order is a uniformly random permutation of all rows for the seed —
//! the interleave picks a uniformly random arrangement of chunk labels, and each chunk's order
//! is uniformly random, which together are all `N!` orders equally likely. Memory: one chunk
//! in pass 1, one read buffer per chunk in pass 2. Deterministic: the result depends only on
//! the rows, their order before the shuffle and the seed.
//!
//! Temp chunk files use a small binary row format (little-endian), [`encode_row`].

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::rng::{hash_words, SplitMix64};
use crate::error::{Error, Result};
use crate::shard::tokens::Row;

/// Read buffer per chunk in the interleave pass.
const READ_BUFFER: usize = 1 << 16;

/// Appends the binary form of a row: ids, seg_lens, optional mask, stage, sources.
pub fn encode_row(r: &Row, out: &mut Vec<u8>) {
    let u32s = |out: &mut Vec<u8>, v: &[u32]| {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    };
    u32s(out, &r.input_ids);
    u32s(out, &r.seg_lens);
    match &r.loss_mask {
        Some(m) => {
            out.push(1);
            out.extend_from_slice(m);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&r.stage.map(|s| s as u64).unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&(r.sources.len() as u32).to_le_bytes());
    for s in &r.sources {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads one row written by [`encode_row`]; `Ok(None)` at a clean end of file. Returns the row
/// and its size in bytes.
pub fn decode_row(r: &mut impl Read) -> std::io::Result<Option<(Row, u64)>> {
    let mut first = [0u8; 4];
    match r.read(&mut first[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut first[1..])?,
    }
    let n = u32::from_le_bytes(first) as usize;
    let mut bytes = 4u64;
    let u32s = |r: &mut dyn Read, n: usize, bytes: &mut u64| -> std::io::Result<Vec<u32>> {
        let mut buf = vec![0u8; n * 4];
        r.read_exact(&mut buf)?;
        *bytes += buf.len() as u64;
        Ok(buf.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
    };
    let input_ids = u32s(r, n, &mut bytes)?;
    let nseg = read_u32(r)? as usize;
    bytes += 4;
    let seg_lens = u32s(r, nseg, &mut bytes)?;
    let mut flag = [0u8; 1];
    r.read_exact(&mut flag)?;
    bytes += 1;
    let loss_mask = if flag[0] == 1 {
        let mut m = vec![0u8; n];
        r.read_exact(&mut m)?;
        bytes += n as u64;
        Some(m)
    } else {
        None
    };
    let mut st = [0u8; 8];
    r.read_exact(&mut st)?;
    bytes += 8;
    let stage = match u64::from_le_bytes(st) {
        u64::MAX => None,
        s => Some(s as u32),
    };
    let nsrc = read_u32(r)? as usize;
    bytes += 4;
    let mut sources = Vec::with_capacity(nsrc);
    for _ in 0..nsrc {
        let l = read_u32(r)? as usize;
        let mut s = vec![0u8; l];
        r.read_exact(&mut s)?;
        bytes += 4 + l as u64;
        sources.push(String::from_utf8(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?);
    }
    Ok(Some((Row { input_ids, seg_lens, loss_mask, sources, stage }, bytes)))
}

/// A finished chunk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// File name inside the temp directory.
    pub file: String,
    /// Rows in the chunk.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
}

/// Shuffles `rows` (when `shuffle`) with the chunk's seed and writes them to `dir/name`
/// atomically. `rows` is left empty.
pub fn write_chunk(dir: &Path, index: usize, rows: &mut Vec<Row>, seed: u64, shuffle: bool) -> Result<ChunkInfo> {
    if shuffle {
        SplitMix64::new(hash_words(seed, &[0xC4u64, index as u64])).shuffle(rows);
    }
    let name = format!("chunk-{index:06}.bin");
    let path = dir.join(&name);
    let tmp = crate::core::fsio::tmp_path(&path);
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    for r in rows.iter() {
        buf.clear();
        encode_row(r, &mut buf);
        w.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
        bytes += buf.len() as u64;
    }
    let file = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    let info = ChunkInfo { file: name, rows: rows.len() as u64, bytes };
    rows.clear();
    Ok(info)
}

/// Where the interleave stands (saved with each finished output shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterleaveState {
    /// The chunk-choice stream.
    pub rng: SplitMix64,
    /// Rows taken from each chunk.
    pub taken: Vec<u64>,
    /// Byte offset reached in each chunk file.
    pub offsets: Vec<u64>,
}

/// Pass 2: yields the rows of all chunks in the shuffled (or, unshuffled, chunk) order.
pub struct Interleaver {
    dir: PathBuf,
    chunks: Vec<ChunkInfo>,
    readers: Vec<Option<BufReader<File>>>,
    state: InterleaveState,
    remaining_total: u64,
    shuffle: bool,
}

impl Interleaver {
    /// Starts (or, with `state`, resumes) the interleave of `chunks` in `dir`.
    pub fn new(dir: &Path, chunks: Vec<ChunkInfo>, seed: u64, shuffle: bool, state: Option<InterleaveState>) -> Result<Self> {
        let state = state.unwrap_or_else(|| InterleaveState {
            rng: SplitMix64::new(hash_words(seed, &[0x17u64])),
            taken: vec![0; chunks.len()],
            offsets: vec![0; chunks.len()],
        });
        if state.taken.len() != chunks.len() {
            return Err(Error::Other(format!("{}: interleave state does not match the chunk list", dir.display())));
        }
        let remaining_total = chunks.iter().zip(&state.taken).map(|(c, t)| c.rows - t).sum();
        let readers = (0..chunks.len()).map(|_| None).collect();
        Ok(Self { dir: dir.to_path_buf(), chunks, readers, state, remaining_total, shuffle })
    }

    /// The state to save after the rows returned so far.
    pub fn state(&self) -> &InterleaveState {
        &self.state
    }

    /// Rows not yet returned.
    pub fn remaining(&self) -> u64 {
        self.remaining_total
    }

    fn pick(&mut self) -> usize {
        if !self.shuffle {
            return (0..self.chunks.len()).find(|&i| self.state.taken[i] < self.chunks[i].rows).expect("rows remain");
        }
        let mut x = self.state.rng.below(self.remaining_total);
        for (i, c) in self.chunks.iter().enumerate() {
            let left = c.rows - self.state.taken[i];
            if x < left {
                return i;
            }
            x -= left;
        }
        unreachable!("x < remaining_total")
    }

    /// The next row, or None when every chunk is exhausted.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        if self.remaining_total == 0 {
            return Ok(None);
        }
        let i = self.pick();
        let path = self.dir.join(&self.chunks[i].file);
        if self.readers[i].is_none() {
            let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            f.seek(SeekFrom::Start(self.state.offsets[i])).map_err(|e| Error::io(&path, e))?;
            self.readers[i] = Some(BufReader::with_capacity(READ_BUFFER, f));
        }
        let r = self.readers[i].as_mut().expect("opened");
        let (row, bytes) = decode_row(r)
            .map_err(|e| Error::io(&path, e))?
            .ok_or_else(|| Error::Other(format!("{}: chunk ended early", path.display())))?;
        self.state.taken[i] += 1;
        self.state.offsets[i] += bytes;
        self.remaining_total -= 1;
        if self.state.taken[i] == self.chunks[i].rows {
            self.readers[i] = None; // close the file as soon as it is done
        }
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32) -> Row {
        Row {
            input_ids: vec![i, i + 1],
            seg_lens: vec![2],
            loss_mask: i.is_multiple_of(2).then(|| vec![1, 0]),
            sources: vec![format!("s{i}")],
            stage: i.is_multiple_of(3).then_some(i),
        }
    }

    #[test]
    fn codec_round_trips() {
        let mut buf = Vec::new();
        for i in 0..5 {
            encode_row(&row(i), &mut buf);
        }
        let mut r = &buf[..];
        let mut total = 0;
        for i in 0..5 {
            let (got, n) = decode_row(&mut r).unwrap().unwrap();
            assert_eq!(got, row(i));
            total += n;
        }
        assert_eq!(total, buf.len() as u64);
        assert!(decode_row(&mut r).unwrap().is_none());
    }

    fn run(dir: &Path, sizes: &[u32], seed: u64, stop_after: Option<usize>) -> Vec<u32> {
        let mut chunks = Vec::new();
        let mut next = 0;
        for (ci, &n) in sizes.iter().enumerate() {
            let mut rows: Vec<Row> = (next..next + n).map(row).collect();
            next += n;
            chunks.push(write_chunk(dir, ci, &mut rows, seed, true).unwrap());
        }
        let mut il = Interleaver::new(dir, chunks.clone(), seed, true, None).unwrap();
        let mut out = Vec::new();
        while let Some(r) = il.next_row().unwrap() {
            out.push(r.input_ids[0]);
            if Some(out.len()) == stop_after {
                // Resume from the saved state in a fresh interleaver.
                let st = il.state().clone();
                il = Interleaver::new(dir, chunks.clone(), seed, true, Some(st)).unwrap();
            }
        }
        out
    }

    #[test]
    fn interleave_is_a_permutation_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let a = run(dir.path(), &[7, 3, 11, 1], 5, None);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..22).collect::<Vec<_>>());
        assert_ne!(a, sorted, "shuffled");
        let b = run(dir.path(), &[7, 3, 11, 1], 5, Some(9));
        assert_eq!(a, b);
        let c = run(dir.path(), &[7, 3, 11, 1], 6, None);
        assert_ne!(a, c);
    }
}
