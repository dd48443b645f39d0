//! Input discovery and opening: paths, directories and globs expand to a sorted file list;
//! each file opens as one or more decompressed byte streams (`.gz`, `.zst`, `.zip` are
//! recognised by their magic bytes, not their names).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Position, ReadError, Result};

/// Compression of an input file, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (possibly multi-member).
    Gzip,
    /// Zstandard.
    Zstd,
    /// A zip archive; each member is one stream.
    Zip,
}

impl Compression {
    /// Detects compression from the magic bytes at the start of a file.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Compression::Zip
        } else {
            Compression::None
        }
    }
}

/// Expands input patterns (files, directories walked recursively, globs) relative to `base`
/// into a sorted, de-duplicated file list. Hidden files (`.name`) inside directories are skipped.
/// A pattern that matches nothing is an error naming it.
pub fn expand_inputs(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for pat in patterns {
        let full = if Path::new(pat).is_absolute() || base == Path::new(".") { PathBuf::from(pat) } else { base.join(pat) };
        let before = out.len();
        let s = full.to_string_lossy().to_string();
        if s.contains(['*', '?', '[']) {
            let paths = glob::glob(&s).map_err(|e| Error::Other(format!("input pattern {pat:?}: {e}")))?;
            for p in paths {
                let p = p.map_err(|e| Error::Other(format!("input pattern {pat:?}: {e}")))?;
                if p.is_dir() {
                    walk_dir(&p, &mut out)?;
                } else {
                    out.push(p);
                }
            }
        } else if full.is_dir() {
            walk_dir(&full, &mut out)?;
        } else if full.is_file() {
            out.push(full);
        } else {
            return Err(Error::Other(format!("input {pat:?}: no such file or directory ({})", full.display())));
        }
        if out.len() == before {
            return Err(Error::Other(format!("input {pat:?} matches no files")));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        entries.push(e.path());
    }
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_dir(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// One decompressed input stream: a file, or one member of a zip archive.
pub struct InputStream<'a> {
    /// Display name used in positions: the path, or `archive.zip!member`.
    pub name: String,
    /// The decompressed bytes.
    pub reader: Box<dyn BufRead + 'a>,
}

/// Size of the buffered reader over each input.
const READ_BUF: usize = 1 << 20;

/// A reader that adds the bytes it reads to a shared counter (progress reporting).
pub struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Opens `path` and calls `f` once per decompressed stream it holds (once for plain, gzip and
/// zstd files; once per member for zip archives, directories skipped). Compressed bytes read
/// are added to `progress`.
pub fn for_each_stream(path: &Path, progress: &Arc<AtomicU64>, mut f: impl FnMut(InputStream<'_>) -> Result<()>) -> Result<()> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    let comp = Compression::sniff(&head[..n]);
    let file = Counting { inner: File::open(path).map_err(|e| Error::io(path, e))?, counter: progress.clone() };
    match comp {
        Compression::None => f(InputStream { name, reader: Box::new(BufReader::with_capacity(READ_BUF, file)) }),
        Compression::Gzip => {
            let dec = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(READ_BUF, file));
            f(InputStream { name, reader: Box::new(BufReader::with_capacity(READ_BUF, dec)) })
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?;
            f(InputStream { name, reader: Box::new(BufReader::with_capacity(READ_BUF, dec)) })
        }
        Compression::Zip => {
            let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
                Error::Read(ReadError::new(
                    Position::new(&name, None, None),
                    "truncated",
                    format!("not a readable zip archive (truncated or corrupt central directory): {e}"),
                ))
            })?;
            for i in 0..archive.len() {
                let member = archive
                    .by_index(i)
                    .map_err(|e| Error::Read(ReadError::new(Position::new(&name, None, None), "zip", format!("member {i}: {e}"))))?;
                if member.is_dir() {
                    continue;
                }
                let member_name = format!("{name}!{}", String::from_utf8_lossy(member.name_raw()));
                f(InputStream { name: member_name, reader: Box::new(BufReader::with_capacity(READ_BUF, member)) })?;
            }
            Ok(())
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Classifies an I/O error met while reading a decompressed stream: decoder failures and
/// unexpected ends are reported as `truncated`, anything else as `io`.
pub fn io_error_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => "truncated",
        _ => "io",
    }
}
