//! Input discovery and opening: paths, directories and globs expand to a sorted file list;
//! each file opens as one or more decoded byte streams (`.gz`, `.zst`, `.zip` are recognised by
//! their magic bytes, not their names; UTF-16 text by its byte-order mark).
//!
//! Walking is safe on hostile trees: a directory reached twice (a symlink cycle such as
//! `a -> .`) is walked once, a file reached by several paths is listed once (device + inode),
//! and special files (FIFOs, sockets, devices) are listed but never opened: reading one is a
//! counted `not-a-file` error, so a named pipe cannot block a run.

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};

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
        if head.starts_with(&GZIP_MAGIC) {
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

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The identity of a file on disk, to notice the same file or directory reached twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FileId {
    /// Device and inode.
    #[cfg(unix)]
    Inode(u64, u64),
    /// The canonical path, where inodes are not available.
    #[cfg(not(unix))]
    Path(PathBuf),
}

fn file_id(path: &Path, meta: &Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        FileId::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId::Path(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// What a path is that is neither a regular file nor a directory (`FIFO`, `socket`, …).
pub fn special_kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_socket() {
            return Some("a socket");
        }
        if t.is_block_device() || t.is_char_device() {
            return Some("a device");
        }
    }
    Some("not a regular file")
}

/// Expands input patterns (files, directories walked recursively, globs) relative to `base`
/// into a sorted file list. Hidden files (`.name`) inside directories are skipped; symlinks are
/// followed, but a directory is walked once however many links lead to it, and a file reached
/// by several paths is listed once, under its first path in sorted order. Special files are
/// listed (opening them is a counted error). A pattern that matches nothing is an error naming it.
pub fn expand_inputs(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut walked: BTreeSet<FileId> = BTreeSet::new();
    for pat in patterns {
        let full = if Path::new(pat).is_absolute() || base == Path::new(".") { PathBuf::from(pat) } else { base.join(pat) };
        let before = out.len();
        let s = full.to_string_lossy().to_string();
        if s.contains(['*', '?', '[']) {
            let paths = glob::glob(&s).map_err(|e| Error::Other(format!("input pattern {pat:?}: {e}")))?;
            for p in paths {
                let p = p.map_err(|e| Error::Other(format!("input pattern {pat:?}: {e}")))?;
                add_path(p, &mut out, &mut walked)?;
            }
        } else if std::fs::metadata(&full).is_ok() {
            add_path(full, &mut out, &mut walked)?;
        } else {
            return Err(Error::Other(format!("input {pat:?}: no such file or directory ({})", full.display())));
        }
        if out.len() == before {
            return Err(Error::Other(format!("input {pat:?} matches no files")));
        }
    }
    out.sort();
    out.dedup();
    // One path per file: the first in sorted order.
    let mut seen: BTreeSet<FileId> = BTreeSet::new();
    out.retain(|p| match std::fs::metadata(p) {
        Ok(m) => seen.insert(file_id(p, &m)),
        Err(_) => true, // a dangling link: opening it reports the error
    });
    Ok(out)
}

/// Adds a path: a directory is walked (once), anything else listed.
fn add_path(p: PathBuf, out: &mut Vec<PathBuf>, walked: &mut BTreeSet<FileId>) -> Result<()> {
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => walk_dir(p, m, out, walked),
        _ => {
            out.push(p);
            Ok(())
        }
    }
}

/// Walks a directory tree with an explicit stack (no recursion), each directory once.
fn walk_dir(root: PathBuf, meta: Metadata, out: &mut Vec<PathBuf>, walked: &mut BTreeSet<FileId>) -> Result<()> {
    if !walked.insert(file_id(&root, &meta)) {
        return Ok(());
    }
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut entries: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(&dir, e))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            entries.push(e.path());
        }
        entries.sort();
        // Subdirectories are pushed in reverse so they are walked in sorted order (which
        // decides the path a file reached twice is listed under).
        for p in entries.into_iter().rev() {
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if walked.insert(file_id(&p, &m)) {
                        stack.push(p);
                    } else {
                        tracing::debug!("{}: directory already walked (symlink cycle or second link); skipped", p.display());
                    }
                }
                _ => out.push(p),
            }
        }
    }
    Ok(())
}

/// One decompressed input stream: a file, or one member of a zip archive.
pub struct InputStream<'a> {
    /// Display name used in positions: the path, or `archive.zip!member`.
    pub name: String,
    /// The decompressed bytes (UTF-16 text already decoded to UTF-8).
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

/// Opens `path` and calls `f` once per decoded stream it holds (once for plain, gzip and zstd
/// files; once per member for zip archives, directories skipped). Compressed bytes read are
/// added to `progress`. A path that is not a regular file (FIFO, socket, device) is a
/// `not-a-file` error and is never opened.
pub fn for_each_stream(path: &Path, progress: &Arc<AtomicU64>, mut f: impl FnMut(InputStream<'_>) -> Result<()>) -> Result<()> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if let Some(what) = special_kind(&meta) {
        return Err(Error::Read(ReadError::new(
            Position::new(&name, None, None),
            ReadErrorKind::NotAFile,
            format!("{what}, not a regular file; skipped (never opened, so it cannot block the run)"),
        )));
    }
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    let comp = Compression::sniff(&head[..n]);
    let file = Counting { inner: File::open(path).map_err(|e| Error::io(path, e))?, counter: progress.clone() };
    match comp {
        Compression::None => f(InputStream { name, reader: text_stream(BufReader::with_capacity(READ_BUF, file)) }),
        Compression::Gzip => {
            let dec = GzMembers::new(BufReader::with_capacity(READ_BUF, file));
            f(InputStream { name, reader: text_stream(BufReader::with_capacity(READ_BUF, dec)) })
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?;
            f(InputStream { name, reader: text_stream(BufReader::with_capacity(READ_BUF, dec)) })
        }
        Compression::Zip => {
            let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
                Error::Read(
                    ReadError::new(
                        Position::new(&name, None, None),
                        ReadErrorKind::Truncated,
                        "not a readable zip archive (truncated or corrupt central directory)",
                    )
                    .with_source(e),
                )
            })?;
            for i in 0..archive.len() {
                let member = archive.by_index(i).map_err(|e| {
                    Error::Read(ReadError::new(Position::new(&name, None, None), ReadErrorKind::Zip, format!("member {i}")).with_source(e))
                })?;
                if member.is_dir() {
                    continue;
                }
                let member_name = format!("{name}!{}", String::from_utf8_lossy(member.name_raw()));
                f(InputStream { name: member_name, reader: text_stream(BufReader::with_capacity(READ_BUF, member)) })?;
            }
            Ok(())
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// gzip members.

/// Concatenated gzip members, read as `gzip -d` does: zero bytes after the last member
/// (padding written by tape and block tools) end the stream quietly; any other bytes after a
/// member are an error (`trailing garbage`), reported after everything before them was read.
/// (`flate2::MultiGzDecoder` takes padding for a broken header.)
struct GzMembers<R: BufRead> {
    state: GzState<R>,
}

enum GzState<R: BufRead> {
    Member(Box<flate2::bufread::GzDecoder<R>>),
    Between(R),
    Done,
}

impl<R: BufRead> GzMembers<R> {
    fn new(r: R) -> Self {
        Self { state: GzState::Member(Box::new(flate2::bufread::GzDecoder::new(r))) }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(&mut self.state, GzState::Done) {
                GzState::Member(mut d) => match d.read(buf) {
                    Ok(0) => self.state = GzState::Between(d.into_inner()),
                    Ok(n) => {
                        self.state = GzState::Member(d);
                        return Ok(n);
                    }
                    Err(e) => {
                        self.state = GzState::Member(d);
                        return Err(e);
                    }
                },
                GzState::Between(mut r) => {
                    let avail = r.fill_buf()?;
                    if avail.is_empty() {
                        return Ok(0);
                    }
                    if avail[0] == GZIP_MAGIC[0] && avail.get(1).is_none_or(|&b| b == GZIP_MAGIC[1]) {
                        self.state = GzState::Member(Box::new(flate2::bufread::GzDecoder::new(r)));
                    } else if avail[0] == 0 {
                        let zeros = avail.iter().take_while(|&&b| b == 0).count();
                        r.consume(zeros);
                        self.state = GzState::Between(r);
                    } else {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "trailing garbage after the gzip data (neither another gzip member nor zero padding)",
                        ));
                    }
                }
                GzState::Done => return Ok(0),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UTF-16 text.

/// A stream that starts with a UTF-16 byte-order mark is decoded to UTF-8 (without the mark),
/// so every reader sees UTF-8; positions are then offsets into the decoded text. Anything else
/// passes through unchanged.
fn text_stream<'a>(mut r: impl BufRead + 'a) -> Box<dyn BufRead + 'a> {
    let enc = match r.fill_buf() {
        Ok([0xff, 0xfe, ..]) => Some(encoding_rs::UTF_16LE),
        Ok([0xfe, 0xff, ..]) => Some(encoding_rs::UTF_16BE),
        _ => None, // an error here is met again, and reported, by the first real read
    };
    match enc {
        Some(enc) => Box::new(BufReader::with_capacity(
            READ_BUF,
            Utf16Reader {
                inner: r,
                dec: enc.new_decoder_with_bom_removal(),
                out: Vec::new(),
                at: 0,
                eof: false,
                decoded: 0,
                failed: false,
            },
        )),
        None => Box::new(r),
    }
}

/// UTF-16 → UTF-8, streaming.
struct Utf16Reader<R> {
    inner: R,
    dec: encoding_rs::Decoder,
    out: Vec<u8>,
    at: usize,
    eof: bool,
    /// UTF-8 bytes produced so far.
    decoded: u64,
    /// Set when the input turned out not to be UTF-16: the error comes once `out` is drained.
    failed: bool,
}

/// Input that is not valid UTF-16 (an unpaired surrogate, an odd trailing byte): the payload of
/// the I/O error, so that it is counted as an `encoding` error, not as a truncated stream.
#[derive(Debug)]
pub struct Utf16Error {
    /// UTF-8 bytes decoded before the bad input.
    pub decoded: u64,
}

impl std::fmt::Display for Utf16Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid UTF-16 after {} bytes of decoded text (unpaired surrogate or odd byte count)", self.decoded)
    }
}

impl std::error::Error for Utf16Error {}

impl<R: BufRead> Read for Utf16Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use encoding_rs::DecoderResult;
        while self.at == self.out.len() {
            if self.failed {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, Utf16Error { decoded: self.decoded }));
            }
            if self.eof {
                return Ok(0);
            }
            self.out.resize(UTF16_CHUNK, 0);
            self.at = 0;
            let src = self.inner.fill_buf()?;
            let last = src.is_empty();
            let (res, read, written) = self.dec.decode_to_utf8_without_replacement(src, &mut self.out, last);
            self.inner.consume(read);
            self.out.truncate(written);
            self.decoded += written as u64;
            match res {
                DecoderResult::InputEmpty => self.eof = last,
                DecoderResult::OutputFull => {}
                DecoderResult::Malformed(..) => self.failed = true,
            }
        }
        let n = (self.out.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// UTF-8 bytes decoded per step.
const UTF16_CHUNK: usize = 64 << 10;

// ---------------------------------------------------------------------------------------------
// The head of a stream.

/// A stream whose first bytes were read to recognise its format. Reading the head stops early
/// at a read error (a damaged compressed file); the error is kept and comes again, after the
/// head's bytes, from [`Peeked::into_stream`], so the records before it are still framed and
/// the error is counted where it happened.
pub struct Peeked<'a> {
    /// Stream name.
    pub name: String,
    /// Up to the requested number of bytes from the start of the stream.
    pub head: Vec<u8>,
    rest: Box<dyn BufRead + 'a>,
    error: Option<std::io::Error>,
}

/// Reads up to `n` bytes of `stream`. `Err` when there is nothing to recognise: the stream is
/// empty or blank (`empty`), or it failed before its first non-blank byte.
pub fn peek(stream: InputStream<'_>, n: usize) -> Result<Peeked<'_>, ReadError> {
    let InputStream { name, mut reader } = stream;
    let mut head = Vec::with_capacity(n.min(READ_BUF));
    let mut error = None;
    while head.len() < n {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if avail.is_empty() {
            break;
        }
        let take = avail.len().min(n - head.len());
        head.extend_from_slice(&avail[..take]);
        reader.consume(take);
    }
    if crate::io::sniff::trimmed(&head).is_empty() && (head.len() < n || error.is_some()) {
        let at = Position::new(&name, Some(head.len() as u64), Some(1 + memchr::memchr_iter(b'\n', &head).count() as u64));
        return Err(match error {
            Some(e) => read_error(at, e),
            None => ReadError::new(at, ReadErrorKind::Empty, "empty input (no data, or only whitespace)"),
        });
    }
    Ok(Peeked { name, head, rest: reader, error })
}

impl<'a> Peeked<'a> {
    /// The whole stream again: the head, then the rest (or the error that stopped the head).
    pub fn into_stream(self) -> InputStream<'a> {
        let Peeked { name, head, rest, error } = self;
        let reader: Box<dyn BufRead + 'a> = match error {
            None => Box::new(Cursor::new(head).chain(rest)),
            Some(e) => Box::new(Cursor::new(head).chain(BufReader::new(Failing(Some(e))))),
        };
        InputStream { name, reader }
    }
}

/// A reader that fails with the stored error (then ends).
struct Failing(Option<std::io::Error>);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}

/// The kind of an I/O error met while reading a decoded stream: text that is not UTF-16 after
/// a UTF-16 byte-order mark is `encoding`; decoder failures and unexpected ends are
/// `truncated`; anything else is `io`.
pub fn io_error_kind(e: &std::io::Error) -> ReadErrorKind {
    if e.get_ref().is_some_and(|inner| inner.is::<Utf16Error>()) {
        return ReadErrorKind::Encoding;
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => ReadErrorKind::Truncated,
        _ => ReadErrorKind::Io,
    }
}

/// A read error at `at` for an I/O error met while reading a stream, its source kept.
pub fn read_error(at: Position, e: std::io::Error) -> ReadError {
    let kind = io_error_kind(&e);
    let message = match kind {
        ReadErrorKind::Truncated => "stream ends early or is corrupt (truncated or damaged compressed file?)",
        ReadErrorKind::Encoding => "not valid UTF-16 (the stream starts with a UTF-16 byte-order mark)",
        _ => "read failed",
    };
    ReadError::new(at, kind, message).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads a whole stream: (bytes, the error that ended it).
    fn drain(mut r: impl Read) -> (Vec<u8>, Option<std::io::Error>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn gzip_members_padding_and_garbage() {
        let mut two = gzip(b"first\n");
        two.extend(gzip(b"second\n"));
        let (out, err) = drain(GzMembers::new(&two[..]));
        assert_eq!((out.as_slice(), err.is_none()), (&b"first\nsecond\n"[..], true));
        // Zero padding after the last member ends the stream quietly, as `gzip -d` does.
        let mut padded = two.clone();
        padded.extend([0u8; 512]);
        let (out, err) = drain(GzMembers::new(&padded[..]));
        assert_eq!((out.as_slice(), err.is_none()), (&b"first\nsecond\n"[..], true));
        // Other bytes after a member: everything before them, then an error.
        let mut garbage = two.clone();
        garbage.extend(b"\0\0junk");
        let (out, err) = drain(GzMembers::new(&garbage[..]));
        assert_eq!(out, b"first\nsecond\n");
        let err = err.expect("trailing garbage is an error");
        assert_eq!(io_error_kind(&err), ReadErrorKind::Truncated);
        assert!(err.to_string().contains("trailing garbage"), "{err}");
    }

    #[test]
    fn utf16_with_a_bom_is_decoded_to_utf8() {
        let text = "{\"content\": \"专利 text\"}\n{\"content\": \"二\"}\n";
        for (bom, be) in [([0xff, 0xfe], false), ([0xfe, 0xff], true)] {
            let mut bytes = bom.to_vec();
            for u in text.encode_utf16() {
                bytes.extend(if be { u.to_be_bytes() } else { u.to_le_bytes() });
            }
            let (out, err) = drain(text_stream(&bytes[..]));
            assert!(err.is_none());
            assert_eq!(String::from_utf8(out).unwrap(), text);
            // An unpaired surrogate: the text before it, then an `encoding` error.
            let mut bad = bytes.clone();
            bad.extend(if be { [0xd8, 0x00] } else { [0x00, 0xd8] });
            bad.extend(if be { [0x00, 0x41] } else { [0x41, 0x00] });
            let (out, err) = drain(text_stream(&bad[..]));
            assert_eq!(String::from_utf8(out).unwrap(), text);
            assert_eq!(io_error_kind(&err.expect("bad UTF-16 is an error")), ReadErrorKind::Encoding);
        }
        // UTF-8 (with or without its BOM) passes through untouched.
        let (out, _) = drain(text_stream(&b"\xef\xbb\xbfplain"[..]));
        assert_eq!(out, b"\xef\xbb\xbfplain");
    }

    #[test]
    fn a_read_error_inside_the_head_comes_back_after_the_head() {
        let data = b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": ".to_vec();
        let failing =
            Cursor::new(data.clone()).chain(Failing(Some(std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt deflate"))));
        let stream = InputStream { name: "x.jsonl.gz".into(), reader: Box::new(BufReader::new(failing)) };
        let p = peek(stream, 1 << 16).expect("there is a head");
        assert_eq!(p.head, data);
        let (out, err) = drain(p.into_stream().reader);
        assert_eq!(out, data);
        let e = read_error(Position::new("x.jsonl.gz", Some(18), Some(3)), err.expect("the error comes back"));
        assert_eq!(e.kind, ReadErrorKind::Truncated);
        assert_eq!(e.causes(), ["corrupt deflate"]);
        // Blank, or failing before any byte: nothing to sniff.
        let empty = InputStream { name: "e".into(), reader: Box::new(&b" \n"[..]) };
        assert_eq!(peek(empty, 100).err().unwrap().kind, ReadErrorKind::Empty);
        let broken = InputStream { name: "b".into(), reader: Box::new(BufReader::new(Failing(Some(std::io::Error::other("disk"))))) };
        assert_eq!(peek(broken, 100).err().unwrap().kind, ReadErrorKind::Io);
    }

    #[cfg(unix)]
    #[test]
    fn walking_survives_self_links_and_never_lists_special_files_twice() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("one.jsonl"), "{}\n").unwrap();
        std::os::unix::fs::symlink(".", d.join("a")).unwrap();
        std::os::unix::fs::symlink(".", d.join("b")).unwrap();
        std::os::unix::fs::symlink("one.jsonl", d.join("link.jsonl")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
        let fifo = d.join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let files = expand_inputs(&[d.display().to_string()], Path::new(".")).unwrap();
        let names: Vec<String> = files.iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect();
        // The file once (its first path in sorted order), the FIFO listed for the reader to refuse.
        assert_eq!(names, ["link.jsonl", "pipe"]);
        let err = for_each_stream(&fifo, &Arc::default(), |_| panic!("a FIFO is never opened")).unwrap_err();
        let Error::Read(e) = err else { panic!("{err}") };
        assert_eq!(e.kind, ReadErrorKind::NotAFile);
        assert!(e.to_string().contains("pipe") && e.message.contains("FIFO"), "{e}");
    }
}
