//! The id check of a document build: every id once across the whole build, whatever the task
//! count. It runs where the build's documents are complete: at the end of a one-task docs
//! build, and at `coretech merge` for a multi-task one (a task sees only its own files, so a
//! check per task would depend on where the task boundaries fall).
//!
//! The check reads the shards back in build order (task, then shard, then row) and sorts one
//! small record per document (id hash, order, text hash, source, place) with the external
//! sorter ([`crate::dedup::extsort::Sorter`]): memory is bounded by [`ID_SORT_BUDGET`], not by
//! the corpus; spilled runs go to a work folder the caller owns. Equal ids come out together,
//! in build order: the first is the id's owner, each later one is a collision — `same-text`
//! (the same entry listed in two inputs; dedup's exact step removes the copy) or `other-text`
//! (a `duplicate-id` error naming both places). Documents stay in the shards (removing them
//! would rewrite finished shards); the counts go into the report per source
//! ([`crate::core::SourceStats::id_collisions`]), the other-text ones into its error samples,
//! and `--strict` fails on the first other-text collision.
//!
//! Before that, while the docs stage reads, [`FileIds`] makes the ids of one input file unique:
//! a record that repeats an earlier record's id with other text (an IPC file listing two
//! editions of one code) is renamed `ID#2`, `#3`, … with the given id in
//! [`crate::doc::ID_GIVEN_KEY`] — both entries are kept, neither is lost. Only collisions
//! across files are left for the whole-build check above.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::core::RunReport;
use crate::dedup::extsort::{read_exact_or_end, Record, Sorter};
use crate::doc::{Document, ID_GIVEN_KEY, PROVENANCE_KEY};
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::shard::documents::read_shard;

/// Bytes of id records held in memory before a sorted run is spilled to disk.
pub const ID_SORT_BUDGET: usize = 64 << 20;
/// Runs merged at once (open files) by the external sort.
const ID_SORT_FAN_IN: usize = 64;
/// Rows read from a shard at a time.
const READ_BATCH_ROWS: usize = 4096;
/// The collision kind of a copy with the same text.
pub const SAME_TEXT: &str = "same-text";
/// The collision kind of a document with another document's id and other text.
pub const OTHER_TEXT: &str = "other-text";
/// The collision kind of a document renamed because an earlier record of its file had its id
/// with other text (see [`FileIds`]).
pub const RENAMED: &str = "renamed";

/// The ids seen so far in one input file, to rename a record that repeats an earlier record's
/// id with other text. Cleared at each new file, so memory is bounded by the largest file's
/// record count (≈ 60 bytes a record), not by the corpus.
#[derive(Debug, Default)]
pub struct FileIds {
    file: Option<u32>,
    /// Per id hash: each distinct text seen under the id (its hash, and the `#k` suffix it went
    /// out with; 0 = the id as given), and the first record's place.
    seen: HashMap<u128, (Vec<(u64, usize)>, String)>,
}

impl FileIds {
    /// Admits the kept document `doc` of input file number `file` (documents in read order).
    /// A repeat of an id with text seen under it goes out as that text's id (an exact copy:
    /// dedup removes it); with new text it is renamed and the returned notice names both
    /// records.
    pub fn admit(&mut self, file: u32, doc: &mut Document) -> Option<ReadError> {
        if self.file != Some(file) {
            self.seen.clear();
            self.file = Some(file);
        }
        let key = xxhash_rust::xxh3::xxh3_128(doc.id.as_bytes());
        let text = xxhash_rust::xxh3::xxh3_64(doc.text.as_bytes());
        let Some((texts, first)) = self.seen.get(&key) else {
            self.seen.insert(key, (vec![(text, 0)], place(doc)));
            return None;
        };
        let given = doc.id.clone();
        if let Some(&(_, k)) = texts.iter().find(|(t, _)| *t == text) {
            if k > 0 {
                doc.id = format!("{given}#{k}");
                doc.meta.insert(ID_GIVEN_KEY.into(), given.into());
            }
            return None;
        }
        let first = first.clone();
        // The next free `#k` (a file could list an id that looks like a renamed one).
        let mut k = texts.iter().map(|&(_, k)| k).max().unwrap_or(0).max(1) + 1;
        while self.seen.contains_key(&xxhash_rust::xxh3::xxh3_128(format!("{given}#{k}").as_bytes())) {
            k += 1;
        }
        doc.id = format!("{given}#{k}");
        doc.meta.insert(ID_GIVEN_KEY.into(), given.clone().into());
        let here = place(doc);
        self.seen.get_mut(&key).expect("seen above").0.push((text, k));
        self.seen.insert(xxhash_rust::xxh3::xxh3_128(doc.id.as_bytes()), (vec![(text, 0)], here.clone()));
        Some(ReadError::new(
            position_of(&here),
            ReadErrorKind::DuplicateId,
            format!("{here}: id {given:?} is already used by {first} (with other text); renamed {:?}", doc.id),
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IdRecord {
    key: u128,
    order: u64,
    text: u64,
    id: String,
    source: String,
    place: String,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut n = [0u8; 4];
    if !read_exact_or_end(r, &mut n)? {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated id record"));
    }
    let mut b = vec![0u8; u32::from_le_bytes(n) as usize];
    if !b.is_empty() && !read_exact_or_end(r, &mut b)? {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated id record"));
    }
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Record for IdRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_le_bytes());
        out.extend_from_slice(&self.order.to_le_bytes());
        out.extend_from_slice(&self.text.to_le_bytes());
        put_str(out, &self.id);
        put_str(out, &self.source);
        put_str(out, &self.place);
    }
    fn decode(r: &mut impl BufRead) -> std::io::Result<Option<Self>> {
        let mut b = [0u8; 32];
        if !read_exact_or_end(r, &mut b)? {
            return Ok(None);
        }
        Ok(Some(IdRecord {
            key: u128::from_le_bytes(b[..16].try_into().expect("16 bytes")),
            order: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            text: u64::from_le_bytes(b[24..].try_into().expect("8 bytes")),
            id: get_str(r)?,
            source: get_str(r)?,
            place: get_str(r)?,
        }))
    }
    fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.id.len() + self.source.len() + self.place.len()
    }
}

/// Where a document came from, for messages: `input record N (byte B)` from its provenance.
pub fn place(doc: &Document) -> String {
    match doc.meta.get(PROVENANCE_KEY) {
        Some(p) => format!("{} record {} (byte {})", p["input"].as_str().unwrap_or("?"), p["record"], p["offset"]),
        None => format!("document {:?}", doc.id),
    }
}

/// The position a place string names (its input and byte offset), for a [`ReadError`].
fn position_of(doc_place: &str) -> Position {
    // `input record N (byte B)`: the input is everything before the last ` record `.
    match doc_place.rsplit_once(" record ") {
        Some((input, rest)) => {
            let offset = rest.split_once("(byte ").and_then(|(_, b)| b.trim_end_matches(')').parse().ok());
            Position::new(input, offset, None)
        }
        None => Position::new(doc_place, None, None),
    }
}

/// Checks that every id of `shards` (in build order) is used once, counting each collision into
/// `report` (see the module docs). `work` is an empty or absent folder for the sorter's runs;
/// it is removed at the end. With `strict`, the first other-text collision is the error.
pub fn check(shards: &[PathBuf], work: &Path, strict: bool, report: &mut RunReport) -> Result<()> {
    let mut sorter = Sorter::new(work, ID_SORT_BUDGET, ID_SORT_FAN_IN);
    let mut order = 0u64;
    for path in shards {
        for batch in read_shard(path, READ_BATCH_ROWS)? {
            for d in batch? {
                sorter.push(IdRecord {
                    key: xxhash_rust::xxh3::xxh3_128(d.id.as_bytes()),
                    order,
                    text: xxhash_rust::xxh3::xxh3_64(d.text.as_bytes()),
                    place: place(&d),
                    id: d.id,
                    source: d.source,
                })?;
                order += 1;
            }
        }
    }
    let mut sorted = sorter.finish()?;
    let mut owner: Option<IdRecord> = None;
    let mut first_error: Option<ReadError> = None;
    while let Some(r) = sorted.next_entry()? {
        match &owner {
            Some(o) if o.key == r.key && o.id == r.id => {
                let kind = if o.text == r.text { SAME_TEXT } else { OTHER_TEXT };
                *report.source(&r.source).id_collisions.entry(kind.to_string()).or_default() += 1;
                if kind == OTHER_TEXT {
                    let e = ReadError::new(
                        position_of(&r.place),
                        ReadErrorKind::DuplicateId,
                        format!("{}: id {:?} is already used by {} (with other text)", r.place, r.id, o.place),
                    );
                    report.sample(&e);
                    first_error.get_or_insert(e);
                }
            }
            _ => owner = Some(r),
        }
    }
    drop(sorted);
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| Error::io(work, e))?;
    }
    match first_error {
        Some(e) if strict => Err(Error::Read(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_places_parse() {
        let r =
            IdRecord { key: 7, order: 3, text: 9, id: "ipc:A".into(), source: "ipc".into(), place: "a b.jsonl record 4 (byte 120)".into() };
        let mut buf = Vec::new();
        r.encode(&mut buf);
        let mut rd = std::io::Cursor::new(buf.clone());
        assert_eq!(IdRecord::decode(&mut rd).unwrap(), Some(r));
        assert_eq!(IdRecord::decode(&mut rd).unwrap(), None);
        // A cut record is an error, not a clean end.
        assert!(IdRecord::decode(&mut std::io::Cursor::new(&buf[..buf.len() - 2])).is_err());
        let p = position_of("a b.jsonl record 4 (byte 120)");
        assert_eq!((p.file.as_str(), p.offset), ("a b.jsonl", Some(120)));
    }
}
