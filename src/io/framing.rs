//! Framing: cutting a decompressed byte stream into raw records without parsing them, so the
//! (expensive) parsing can run in parallel while one thread frames. Framers are streaming and
//! bounded: no record larger than `max_record_bytes` is ever buffered.
//!
//! The JSON-array framer is hand-written rather than built on `serde_json::StreamDeserializer`
//! because it only has to find element boundaries (strings and nesting), which it does with
//! `memchr` at several hundred MB/s, and it leaves the parsing of each element to the workers.

use std::io::BufRead;
use std::sync::Arc;

use memchr::{memchr, memchr2};

use super::input::{read_error, InputStream};
use crate::error::{Position, ReadError, ReadErrorKind};

/// One framed input record: its bytes and where it came from.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Stream name (path, or `archive.zip!member`).
    pub file: Arc<str>,
    /// Index of the record in its stream, from 0.
    pub index: u64,
    /// Byte offset of the record's first byte in the decompressed stream.
    pub offset: u64,
    /// 1-based line of the record's first byte.
    pub line: u64,
    /// The record's bytes (a JSONL line, a JSON array element, one XML document, …).
    pub bytes: Vec<u8>,
}

impl RawRecord {
    /// The record's position, for errors.
    pub fn position(&self) -> Position {
        Position::new(self.file.to_string(), Some(self.offset), Some(self.line))
    }

    /// An error of class `kind` located at this record.
    pub fn error(&self, kind: ReadErrorKind, message: impl Into<String>) -> ReadError {
        ReadError::new(self.position(), kind, message)
    }

    /// An error at byte `within` of this record (absolute offset computed; line of the record).
    pub fn error_at(&self, within: u64, kind: ReadErrorKind, message: impl Into<String>) -> ReadError {
        let line = self.line + self.bytes[..(within as usize).min(self.bytes.len())].iter().filter(|&&b| b == b'\n').count() as u64;
        ReadError::new(Position::new(self.file.to_string(), Some(self.offset + within), Some(line)), kind, message)
    }
}

/// Decides, for line-grouped formats, whether `line` starts a new record given the first line
/// of the record being built.
pub type GroupFn = fn(first_line: &[u8], line: &[u8]) -> bool;

/// How a format's stream is cut into records.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// One record per non-blank line (JSONL).
    Lines,
    /// The elements of a top-level JSON array, or of the first array value inside a top-level
    /// object (the `{"RECORDS": [...]}` wrapper).
    JsonArray,
    /// Concatenated XML documents, each starting with `<?xml` at the start of a line (USPTO
    /// weekly files); a file without a declaration is one document.
    XmlDocuments,
    /// Consecutive lines grouped into records by a format-specific rule.
    LineGroups(GroupFn),
    /// CSV records (RFC 4180, comma-separated): a record ends at a line end outside a quoted
    /// field, so quoted fields may span lines. The first record is the header row. A quoted
    /// field still open at the end of the stream is a `csv` error at its record.
    Csv,
    /// The whole stream is one record.
    Whole,
}

/// What a framer does with each record or error. Returning `false` stops the stream early.
pub type Emit<'e> = dyn FnMut(Result<RawRecord, ReadError>) -> bool + 'e;

/// Frames `stream` with `framing`, calling `emit` for each record (or framing error).
/// Stream-level failures (a truncated gzip, an unclosed JSON array) are emitted as one error
/// and end the stream.
pub fn frame(framing: Framing, stream: InputStream<'_>, max_record_bytes: usize, emit: &mut Emit<'_>) {
    let name: Arc<str> = Arc::from(stream.name.as_str());
    let mut src = Source { r: stream.reader, st: StreamState { name, offset: 0, line: 1, limit: max_record_bytes, index: 0 } };
    let res = match framing {
        Framing::Lines => frame_lines(&mut src, emit, |_, _| true, false),
        Framing::XmlDocuments => frame_lines(&mut src, emit, |_, line| is_xml_decl(line), true),
        Framing::LineGroups(f) => frame_lines(&mut src, emit, f, true),
        Framing::Whole => frame_whole(&mut src, emit),
        Framing::JsonArray => frame_json_array(&mut src, emit),
        Framing::Csv => frame_csv(&mut src, emit),
    };
    if let Err(e) = res {
        emit(Err(e));
    }
}

fn is_xml_decl(line: &[u8]) -> bool {
    let t = trim_start(line);
    t.starts_with(b"<?xml") || t.starts_with(b"\xef\xbb\xbf<?xml")
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

struct Source<'a> {
    r: Box<dyn BufRead + 'a>,
    st: StreamState,
}

/// Position bookkeeping of a stream, kept apart from the reader so it can be updated while the
/// reader's buffer is borrowed.
struct StreamState {
    name: Arc<str>,
    offset: u64,
    line: u64,
    limit: usize,
    index: u64,
}

impl StreamState {
    fn pos(&self, offset: u64, line: u64) -> Position {
        Position::new(self.name.to_string(), Some(offset), Some(line))
    }

    fn io_err(&self, e: std::io::Error) -> ReadError {
        read_error(self.pos(self.offset, self.line), e)
    }

    fn record(&mut self, offset: u64, line: u64, bytes: Vec<u8>) -> RawRecord {
        let r = RawRecord { file: self.name.clone(), index: self.index, offset, line, bytes };
        self.index += 1;
        r
    }

    fn too_large(&mut self, offset: u64, line: u64) -> ReadError {
        self.index += 1;
        ReadError::new(
            self.pos(offset, line),
            ReadErrorKind::TooLarge,
            format!("record larger than max_record_bytes ({} bytes); skipped", self.limit),
        )
    }
}

impl Source<'_> {
    /// Reads one line (with its `\n`) into `buf`, unless it would grow past the limit, in which
    /// case the rest of the line is consumed and dropped. Returns (bytes consumed, overflowed).
    fn read_line(&mut self, buf: &mut Vec<u8>, room: usize) -> Result<(usize, bool), ReadError> {
        let mut consumed = 0usize;
        let mut overflow = false;
        loop {
            let avail = match self.r.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.st.io_err(e)),
            };
            if avail.is_empty() {
                break;
            }
            let (take, done) = match memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if !overflow {
                if buf.len() + take > room {
                    overflow = true;
                } else {
                    buf.extend_from_slice(&avail[..take]);
                }
            }
            self.r.consume(take);
            consumed += take;
            if done {
                break;
            }
        }
        Ok((consumed, overflow))
    }
}

fn strip_bom(b: &mut Vec<u8>) {
    if b.starts_with(b"\xef\xbb\xbf") {
        b.drain(..3);
    }
}

fn strip_eol(b: &mut Vec<u8>) {
    if b.last() == Some(&b'\n') {
        b.pop();
        if b.last() == Some(&b'\r') {
            b.pop();
        }
    }
}

/// Line-based framing. With `group`, consecutive lines form one record and `starts_new(first,
/// line)` says where the next begins; without it, each non-blank line is a record.
fn frame_lines(src: &mut Source<'_>, emit: &mut Emit<'_>, starts_new: GroupFn, group: bool) -> Result<(), ReadError> {
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_first_len = 0usize; // length of the first line of `cur`
    let mut cur_off = 0u64;
    let mut cur_line = 1u64;
    let mut cur_overflow = false;
    let mut line: Vec<u8> = Vec::new();
    let mut first_line_of_stream = true;
    loop {
        line.clear();
        let line_off = src.st.offset;
        let line_no = src.st.line;
        let room = if group { src.st.limit.saturating_sub(cur.len()).max(1) } else { src.st.limit };
        let (n, overflow) = src.read_line(&mut line, room)?;
        if n == 0 {
            break;
        }
        src.st.offset += n as u64;
        src.st.line += 1;
        if first_line_of_stream {
            strip_bom(&mut line);
            first_line_of_stream = false;
        }
        if !group {
            if overflow {
                let e = src.st.too_large(line_off, line_no);
                if !emit(Err(e)) {
                    return Ok(());
                }
                continue;
            }
            strip_eol(&mut line);
            if line.iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            let rec = src.st.record(line_off, line_no, std::mem::take(&mut line));
            if !emit(Ok(rec)) {
                return Ok(());
            }
            continue;
        }
        let begins = (cur.is_empty() && !cur_overflow) || starts_new(&cur[..cur_first_len], &line);
        if begins && (!cur.is_empty() || cur_overflow) {
            if !flush_group(src, emit, &mut cur, cur_off, cur_line, cur_overflow) {
                return Ok(());
            }
            cur_overflow = false;
        }
        if cur.is_empty() && !cur_overflow {
            if line.iter().all(|c| c.is_ascii_whitespace()) && !overflow {
                continue; // blank lines between records are not records
            }
            cur_off = line_off;
            cur_line = line_no;
            cur_first_len = line.len();
        }
        if overflow || cur_overflow {
            cur_overflow = true;
            cur.clear();
            cur_first_len = 0;
        } else {
            cur.extend_from_slice(&line);
        }
    }
    if !cur.is_empty() || cur_overflow {
        flush_group(src, emit, &mut cur, cur_off, cur_line, cur_overflow);
    }
    Ok(())
}

fn flush_group(src: &mut Source<'_>, emit: &mut Emit<'_>, cur: &mut Vec<u8>, off: u64, line: u64, overflow: bool) -> bool {
    if overflow {
        let e = src.st.too_large(off, line);
        cur.clear();
        return emit(Err(e));
    }
    // Trailing blank lines belong to no record.
    while cur.last().is_some_and(|c| c.is_ascii_whitespace()) {
        cur.pop();
    }
    if cur.is_empty() {
        return true;
    }
    let rec = src.st.record(off, line, std::mem::take(cur));
    emit(Ok(rec))
}

/// Where a CSV scan stands (the csv crate's reading: a quote opens a quoted field only at the
/// start of a field; elsewhere it is a literal character).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    /// At the start of a field.
    FieldStart,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field (its end, or the first of a doubled quote).
    QuoteInQuoted,
}

/// CSV framing: a record ends at a line end outside a quoted field. Every byte is scanned, so
/// an oversized record (skipped as `too-large`) still ends in the right place. Blank lines
/// between records are skipped.
fn frame_csv(src: &mut Source<'_>, emit: &mut Emit<'_>) -> Result<(), ReadError> {
    let mut cur: Vec<u8> = Vec::new();
    let mut overflow = false;
    let mut state = CsvState::FieldStart;
    let (mut rec_off, mut rec_line, mut in_record) = (0u64, 1u64, false);
    let mut first = true;
    loop {
        let buf = match src.r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(src.st.io_err(e)),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut i = 0;
        if first {
            first = false;
            if buf.starts_with(b"\xef\xbb\xbf") {
                i = 3;
            }
        }
        let mut seg = i; // start of the bytes of `buf` not yet copied into `cur`
        let mut stopped = false;
        while i < len {
            if !in_record {
                (rec_off, rec_line, in_record, seg) = (src.st.offset + i as u64, src.st.line, true, i);
            }
            if state == CsvState::Quoted {
                match memchr(b'"', &buf[i..]) {
                    Some(k) => {
                        count_lines(&buf[i..i + k], &mut src.st.line);
                        state = CsvState::QuoteInQuoted;
                        i += k + 1;
                    }
                    None => {
                        count_lines(&buf[i..], &mut src.st.line);
                        i = len;
                    }
                }
                continue;
            }
            let Some(k) = memchr::memchr3(b'"', b',', b'\n', &buf[i..]) else {
                state = CsvState::Unquoted;
                i = len;
                continue;
            };
            if k > 0 {
                state = CsvState::Unquoted;
            }
            let j = i + k;
            i = j + 1;
            match buf[j] {
                b'"' => {
                    if state != CsvState::Unquoted {
                        state = CsvState::Quoted;
                    }
                }
                b',' => state = CsvState::FieldStart,
                _ => {
                    src.st.line += 1;
                    state = CsvState::FieldStart;
                    append_limited(&mut cur, &buf[seg..i], src.st.limit, &mut overflow);
                    in_record = false;
                    if !finish_csv_record(&mut src.st, emit, &mut cur, &mut overflow, rec_off, rec_line) {
                        stopped = true;
                        break;
                    }
                }
            }
        }
        if in_record {
            append_limited(&mut cur, &buf[seg..i], src.st.limit, &mut overflow);
        }
        src.r.consume(i);
        src.st.offset += i as u64;
        if stopped {
            return Ok(());
        }
    }
    if in_record {
        if state == CsvState::Quoted {
            src.st.index += 1;
            emit(Err(ReadError::new(
                src.st.pos(rec_off, rec_line),
                ReadErrorKind::Csv,
                "unclosed quoted field (it runs to the end of the file)",
            )));
        } else {
            finish_csv_record(&mut src.st, emit, &mut cur, &mut overflow, rec_off, rec_line);
        }
    }
    Ok(())
}

/// Emits the CSV record in `cur` (its line end removed; blank lines are no record).
fn finish_csv_record(st: &mut StreamState, emit: &mut Emit<'_>, cur: &mut Vec<u8>, overflow: &mut bool, off: u64, line: u64) -> bool {
    if std::mem::take(overflow) {
        cur.clear();
        let e = st.too_large(off, line);
        return emit(Err(e));
    }
    strip_eol(cur);
    if cur.iter().all(|c| c.is_ascii_whitespace()) {
        cur.clear();
        return true;
    }
    let rec = st.record(off, line, std::mem::take(cur));
    emit(Ok(rec))
}

fn frame_whole(src: &mut Source<'_>, emit: &mut Emit<'_>) -> Result<(), ReadError> {
    let mut buf = Vec::new();
    let mut overflow = false;
    loop {
        let (n, of) = src.read_line(&mut buf, src.st.limit)?;
        if n == 0 {
            break;
        }
        src.st.offset += n as u64;
        overflow |= of;
        if overflow {
            buf.clear();
        }
    }
    if overflow {
        let e = src.st.too_large(0, 1);
        emit(Err(e));
        return Ok(());
    }
    strip_bom(&mut buf);
    if buf.iter().all(|c| c.is_ascii_whitespace()) {
        return Err(ReadError::new(src.st.pos(0, 1), ReadErrorKind::Empty, "empty input"));
    }
    let rec = src.st.record(0, 1, buf);
    emit(Ok(rec));
    Ok(())
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum JState {
    /// Before the top-level value.
    Start,
    /// Inside a top-level object, looking for the first array value.
    SeekArray,
    /// Inside the array, between elements.
    Between,
    /// Inside an element.
    Element,
    /// After the array closed (and, for an array inside a top-level object, after the rest of
    /// that object while `depth` > 0).
    Done,
}

/// Streams the elements of a top-level JSON array (or of the first array inside a top-level
/// object). Strings and nesting are tracked; everything else is left to the parser. Bytes after
/// the end of the top-level value are counted and reported as one `json` error at the first of
/// them (the records before are kept).
fn frame_json_array(src: &mut Source<'_>, emit: &mut Emit<'_>) -> Result<(), ReadError> {
    let mut state = JState::Start;
    let mut in_string = false;
    let mut escape = false;
    let mut depth: u32 = 0; // nesting inside the current element (or the wrapper object while seeking)
    let mut elem: Vec<u8> = Vec::new();
    let mut elem_off = 0u64;
    let mut elem_line = 1u64;
    let mut elem_overflow = false;
    let mut first = true;
    let mut wrapped = false; // the array is a value inside a top-level object
    let mut trailing = 0u64; // non-blank bytes after the top-level value
    let mut trailing_at = (0u64, 0u64); // offset and line of the first
    loop {
        let avail = match src.r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(src.st.io_err(e)),
        };
        if avail.is_empty() {
            break;
        }
        let buf = avail;
        let mut skip = 0usize;
        if first {
            first = false;
            if buf.starts_with(b"\xef\xbb\xbf") {
                skip = 3;
            }
        }
        let len = buf.len();
        let mut i = skip;
        // Bytes of `buf[seg_start..i]` belong to the current element and are copied in bulk.
        let mut seg_start = if state == JState::Element { i } else { usize::MAX };
        let mut emitted_stop = false;
        while i < len {
            if in_string {
                if escape {
                    escape = false;
                    i += 1;
                    continue;
                }
                match memchr2(b'"', b'\\', &buf[i..]) {
                    None => {
                        count_lines(&buf[i..], &mut src.st.line);
                        i = len;
                    }
                    Some(k) => {
                        count_lines(&buf[i..i + k], &mut src.st.line);
                        i += k;
                        if buf[i] == b'\\' {
                            escape = true;
                        } else {
                            in_string = false;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            let c = buf[i];
            match state {
                JState::Start => {
                    if c == b'[' {
                        state = JState::Between;
                    } else if c == b'{' {
                        state = JState::SeekArray;
                        depth = 1;
                    } else if c == b'\n' {
                        src.st.line += 1;
                    } else if !c.is_ascii_whitespace() {
                        let off = src.st.offset + i as u64;
                        let line = src.st.line;
                        src.r.consume(i);
                        return Err(ReadError::new(
                            src.st.pos(off, line),
                            ReadErrorKind::Shape,
                            "expected a JSON array or an object holding one (e.g. {\"RECORDS\": [...]})",
                        ));
                    }
                    i += 1;
                }
                JState::SeekArray => {
                    match c {
                        b'"' => in_string = true,
                        b'[' if depth == 1 => {
                            state = JState::Between;
                            wrapped = true;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                let off = src.st.offset + i as u64;
                                let line = src.st.line;
                                src.r.consume(i + 1);
                                src.st.offset = off + 1;
                                return Err(ReadError::new(
                                    src.st.pos(off, line),
                                    ReadErrorKind::Shape,
                                    "top-level object holds no array of records",
                                ));
                            }
                        }
                        b'\n' => src.st.line += 1,
                        _ => {}
                    }
                    i += 1;
                }
                JState::Between => {
                    match c {
                        b']' => {
                            state = JState::Done;
                            // Still inside the wrapper object: its other keys are not records.
                            depth = u32::from(wrapped);
                        }
                        b',' => {}
                        b'\n' => src.st.line += 1,
                        c if c.is_ascii_whitespace() => {}
                        _ => {
                            state = JState::Element;
                            elem.clear();
                            elem_overflow = false;
                            elem_off = src.st.offset + i as u64;
                            elem_line = src.st.line;
                            seg_start = i;
                            depth = 0;
                            continue; // re-read this byte as part of the element
                        }
                    }
                    i += 1;
                }
                JState::Element => {
                    let mut end = false;
                    match c {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            if depth == 0 {
                                // `]` closing the array right after a scalar element. A stray
                                // `}` stays in the element for its parser to report: ending
                                // the element there re-read the `}` for ever, emitting empty
                                // elements (a hang found by the fuzz harness: `[}`).
                                end = c == b']';
                            } else {
                                depth -= 1;
                                if depth == 0 {
                                    i += 1;
                                    end = true;
                                }
                            }
                        }
                        b',' if depth == 0 => end = true,
                        b'\n' => src.st.line += 1,
                        _ => {}
                    }
                    if !end {
                        i += 1;
                        continue;
                    }
                    append_limited(&mut elem, &buf[seg_start..i], src.st.limit, &mut elem_overflow);
                    seg_start = usize::MAX;
                    state = JState::Between;
                    let item = if elem_overflow {
                        Err(src.st.too_large(elem_off, elem_line))
                    } else {
                        while elem.last().is_some_and(|c| c.is_ascii_whitespace()) {
                            elem.pop();
                        }
                        Ok(src.st.record(elem_off, elem_line, std::mem::take(&mut elem)))
                    };
                    if !emit(item) {
                        emitted_stop = true;
                        break;
                    }
                }
                JState::Done => {
                    match c {
                        b'\n' => src.st.line += 1,
                        b'"' if depth > 0 => in_string = true,
                        b'{' | b'[' if depth > 0 => depth += 1,
                        b'}' | b']' if depth > 0 => depth -= 1,
                        _ if depth > 0 || c.is_ascii_whitespace() => {}
                        _ => {
                            if trailing == 0 {
                                trailing_at = (src.st.offset + i as u64, src.st.line);
                            }
                            trailing += 1;
                        }
                    }
                    i += 1;
                }
            }
        }
        if state == JState::Element && seg_start != usize::MAX {
            append_limited(&mut elem, &buf[seg_start..i.min(len)], src.st.limit, &mut elem_overflow);
        }
        let used = i.min(len);
        src.r.consume(used);
        src.st.offset += used as u64;
        if emitted_stop {
            return Ok(());
        }
    }
    match state {
        JState::Done if depth > 0 => Err(ReadError::new(
            src.st.pos(src.st.offset, src.st.line),
            ReadErrorKind::Truncated,
            "input ends before the object holding the JSON array is closed (truncated file?)",
        )),
        JState::Done if trailing > 0 => Err(ReadError::new(
            src.st.pos(trailing_at.0, trailing_at.1),
            ReadErrorKind::Json,
            format!("{trailing} non-blank bytes after the end of the JSON array (ignored)"),
        )),
        JState::Done => Ok(()),
        JState::Element => Err(ReadError::new(
            src.st.pos(elem_off, elem_line),
            ReadErrorKind::Truncated,
            "input ends inside a JSON array element (truncated file?)",
        )),
        JState::Start => {
            Err(ReadError::new(src.st.pos(src.st.offset, src.st.line), ReadErrorKind::Empty, "empty input: expected a JSON array"))
        }
        _ => Err(ReadError::new(
            src.st.pos(src.st.offset, src.st.line),
            ReadErrorKind::Truncated,
            "input ends before the JSON array is closed (truncated file?)",
        )),
    }
}

fn append_limited(elem: &mut Vec<u8>, bytes: &[u8], limit: usize, overflow: &mut bool) {
    if *overflow {
        return;
    }
    if elem.len() + bytes.len() > limit {
        *overflow = true;
        elem.clear();
        elem.shrink_to(0);
    } else {
        elem.extend_from_slice(bytes);
    }
}

fn count_lines(b: &[u8], line: &mut u64) {
    *line += memchr::memchr_iter(b'\n', b).count() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, data: &[u8], limit: usize) -> Vec<Result<RawRecord, ReadError>> {
        let stream = InputStream { name: "t".into(), reader: Box::new(std::io::BufReader::with_capacity(7, data)) };
        let mut out = Vec::new();
        frame(framing, stream, limit, &mut |r| {
            out.push(r);
            true
        });
        out
    }

    fn texts(v: &[Result<RawRecord, ReadError>]) -> Vec<String> {
        v.iter()
            .map(|r| match r {
                Ok(r) => String::from_utf8(r.bytes.clone()).unwrap(),
                Err(e) => format!("ERR {} {:?}", e.kind, e.position.offset),
            })
            .collect()
    }

    #[test]
    fn lines_skip_blank_and_strip_crlf() {
        let v = run(Framing::Lines, b"\xef\xbb\xbf{\"a\":1}\r\n\n  \n{\"b\":2}", 100);
        assert_eq!(texts(&v), ["{\"a\":1}", "{\"b\":2}"]);
        let r = v[1].as_ref().unwrap();
        assert_eq!((r.offset, r.line, r.index), (16, 4, 1));
    }

    #[test]
    fn lines_over_limit_are_errors_and_reading_goes_on() {
        let v = run(Framing::Lines, b"short\nthis line is far too long\nok\n", 10);
        assert_eq!(texts(&v), ["short", "ERR too-large Some(6)", "ok"]);
    }

    #[test]
    fn json_array_elements_with_nesting_and_strings() {
        let data = br#"[ {"a": "x,]}\"", "b": [1,{"c":2}]} ,
  {"d": "\\"} , 3 ]"#;
        let v = run(Framing::JsonArray, data, 1000);
        assert_eq!(texts(&v), [r#"{"a": "x,]}\"", "b": [1,{"c":2}]}"#, r#"{"d": "\\"}"#, "3"]);
        assert_eq!(v[1].as_ref().unwrap().line, 2);
    }

    #[test]
    fn json_records_wrapper() {
        let v = run(Framing::JsonArray, br#"{"RECORDS":[{"a":1},{"a":2}]}"#, 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#, r#"{"a":2}"#]);
    }

    #[test]
    fn json_truncated_inside_element() {
        let v = run(Framing::JsonArray, br#"[{"a":1},{"a":"#, 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#, "ERR truncated Some(9)"]);
    }

    #[test]
    fn json_stray_close_brace_is_an_element_not_a_hang() {
        // `[}` looped for ever emitting empty elements (fuzz finding, format_wudao-json).
        let v = run(Framing::JsonArray, br#"[}, {"a":1}]"#, 1000);
        assert_eq!(texts(&v), ["}", r#"{"a":1}"#]);
        let v = run(Framing::JsonArray, b"[}\n {\"a\":{\"a\":1}}", 1000);
        assert_eq!(texts(&v), ["}\n {\"a\":{\"a\":1}}", "ERR truncated Some(17)"]);
    }

    #[test]
    fn json_bytes_after_the_array_are_counted() {
        let v = run(Framing::JsonArray, b"[{\"a\":1}]\n x yz\n", 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#, "ERR json Some(11)"]);
        let e = v[1].as_ref().unwrap_err();
        assert_eq!(e.position.line, Some(2));
        assert!(e.message.starts_with("3 non-blank bytes after the end"), "{e}");
        // Keys after the array inside a wrapper object are its own, not trailing bytes.
        let v = run(Framing::JsonArray, br#"{"RECORDS":[{"a":1}], "total": {"n": "]}"}} "#, 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#]);
        let v = run(Framing::JsonArray, br#"{"RECORDS":[{"a":1}]}}"#, 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#, "ERR json Some(21)"]);
        let v = run(Framing::JsonArray, br#"{"RECORDS":[{"a":1}]"#, 1000);
        assert_eq!(texts(&v), [r#"{"a":1}"#, "ERR truncated Some(20)"]);
    }

    #[test]
    fn json_not_an_array() {
        let v = run(Framing::JsonArray, b"  \"x\"", 1000);
        assert_eq!(texts(&v), ["ERR shape Some(2)"]);
    }

    #[test]
    fn json_oversized_element_is_skipped() {
        let v = run(Framing::JsonArray, br#"[{"a":"0123456789"},{"b":1}]"#, 10);
        assert_eq!(texts(&v), ["ERR too-large Some(1)", r#"{"b":1}"#]);
    }

    #[test]
    fn xml_documents_split_at_declarations() {
        let data = b"<?xml version=\"1.0\"?>\n<a>1</a>\n<?xml version=\"1.0\"?>\n<b/>\n";
        let v = run(Framing::XmlDocuments, data, 1000);
        assert_eq!(texts(&v), ["<?xml version=\"1.0\"?>\n<a>1</a>", "<?xml version=\"1.0\"?>\n<b/>"]);
        assert_eq!(v[1].as_ref().unwrap().line, 3);
    }

    #[test]
    fn line_groups() {
        fn by_first_field(first: &[u8], line: &[u8]) -> bool {
            first.split(|&c| c == b'\t').next() != line.split(|&c| c == b'\t').next()
        }
        let v = run(Framing::LineGroups(by_first_field), b"a\t1\na\t2\nb\t3\n", 1000);
        assert_eq!(texts(&v), ["a\t1\na\t2", "b\t3"]);
    }

    #[test]
    fn csv_records_span_quoted_line_ends() {
        let data = b"\xef\xbb\xbfquestion,answer\r\nq1,\"line one\r\nline \"\"two\"\"\"\r\n\r\nq2,a\"b\r\nq3,\"x,\ny\"";
        let v = run(Framing::Csv, data, 1000);
        assert_eq!(texts(&v), ["question,answer", "q1,\"line one\r\nline \"\"two\"\"\"", "q2,a\"b", "q3,\"x,\ny\""]);
        let lines: Vec<(u64, u64)> = v.iter().map(|r| r.as_ref().map(|r| (r.line, r.offset)).unwrap()).collect();
        assert_eq!(lines, [(1, 3), (2, 20), (5, 51), (6, 59)]);
    }

    #[test]
    fn csv_unclosed_quote_and_oversized_record() {
        let v = run(Framing::Csv, b"h1,h2\nq,\"open\nstill open\n", 1000);
        assert_eq!(texts(&v), ["h1,h2", "ERR csv Some(6)"]);
        assert_eq!(v[1].as_ref().unwrap_err().position.line, Some(2));
        // A record over the limit is skipped whole, quoted line ends included.
        let v = run(Framing::Csv, b"h1,h2\nq,\"0123456789\n0123456789\"\nq,a\n", 12);
        assert_eq!(texts(&v), ["h1,h2", "ERR too-large Some(6)", "q,a"]);
        assert_eq!(v[2].as_ref().unwrap().line, 4);
    }

    #[test]
    fn whole_and_empty() {
        assert_eq!(texts(&run(Framing::Whole, b"{'a': 1}\n", 100)), ["{'a': 1}\n"]);
        assert_eq!(texts(&run(Framing::Whole, b"  \n", 100)), ["ERR empty Some(0)"]);
    }
}
