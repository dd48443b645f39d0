//! TensorBoard event files (`events.out.tfevents.*`) with scalar summaries, so
//! `tensorboard --logdir runs/` shows a run's loss, learning rate, gradient norm, throughput and
//! validation loss.
//!
//! Hand-encoded (the maintained Rust writer, `tensorboard-rs`, pulls `image` 0.23 and
//! `protobuf` 2 for three messages): a file is a sequence of TFRecords — `u64` length, masked
//! CRC-32C of the length, the data, masked CRC-32C of the data (little-endian) — each holding a
//! serialized `tensorflow.Event` protobuf. The first event carries `file_version =
//! "brain.Event:2"`; the others a `Summary` with one `simple_value` per tag. Field numbers
//! (tensorflow/core/util/event.proto, framework/summary.proto): `Event.wall_time` 1 (double),
//! `step` 2 (int64), `file_version` 3 (string), `summary` 5; `Summary.value` 1;
//! `Summary.Value.tag` 1 (string), `simple_value` 2 (float).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{Result, TrainError};

/// `masked_crc32c` of the TFRecord format: the CRC rotated right by 15 bits plus a constant, so
/// a CRC over data that holds CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Protobuf field key: field number and wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A serialized `Event` with `wall_time`, `step` and either a file version or a summary.
fn event(wall_time: f64, step: i64, file_version: Option<&str>, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut e = Vec::new();
    key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, v) in scalars {
            let mut value = Vec::new();
            bytes_field(&mut value, 1, tag.as_bytes());
            key(&mut value, 2, 5);
            value.extend_from_slice(&v.to_le_bytes());
            bytes_field(&mut summary, 1, &value);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    r
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// An open event file. Each process start writes a new one (TensorBoard reads every file of a
/// directory; after a resume the steps a killed run logged past its checkpoint are written again
/// and TensorBoard keeps the newer values).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<host>.<pid>.<n>` (`n` counts the writers of
    /// this process, as TensorFlow's does; an existing file is never overwritten) with its
    /// file-version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
        let t = now();
        let (path, f) = loop {
            let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("events.out.tfevents.{}.{host}.{}.{n}", t as u64, std::process::id()));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TrainError::file(&path, e)),
            }
        };
        let mut w = EventWriter { path, out: BufWriter::new(f) };
        w.write(&event(t, 0, Some("brain.Event:2"), &[]))?;
        w.flush()?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(&record(data)).map_err(|e| TrainError::file(&self.path, e))
    }

    /// Appends scalars for `step` (buffered: [`EventWriter::flush`] makes them visible).
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f32)]) -> Result<()> {
        let finite: Vec<(&str, f32)> = scalars.iter().copied().filter(|(_, v)| v.is_finite()).collect();
        if finite.is_empty() {
            return Ok(());
        }
        self.write(&event(now(), step as i64, None, &finite))
    }

    /// Writes the buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| TrainError::file(&self.path, e))
    }
}

/// A decoded scalar event: (step, tag, value). For tests and tools.
pub type Scalar = (i64, String, f32);

fn read_varint(b: &[u8], i: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// One decoded protobuf field: number, wire type, bytes (length-delimited, fixed32/64), varint.
type Field = (u32, u8, Vec<u8>, u64);

/// Fields of one protobuf message.
fn fields(b: &[u8]) -> std::result::Result<Vec<Field>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let k = read_varint(b, &mut i)?;
        let (field, wire) = ((k >> 3) as u32, (k & 7) as u8);
        let take = |i: &mut usize, n: usize| -> std::result::Result<Vec<u8>, String> {
            let s = b.get(*i..*i + n).ok_or("truncated field")?.to_vec();
            *i += n;
            Ok(s)
        };
        match wire {
            0 => {
                let v = read_varint(b, &mut i)?;
                out.push((field, wire, Vec::new(), v));
            }
            1 => out.push((field, wire, take(&mut i, 8)?, 0)),
            5 => out.push((field, wire, take(&mut i, 4)?, 0)),
            2 => {
                let n = read_varint(b, &mut i)? as usize;
                out.push((field, wire, take(&mut i, n)?, 0));
            }
            w => return Err(format!("wire type {w}")),
        }
    }
    Ok(out)
}

/// Reads an event file back, checking every record's CRCs: the file version and the scalars.
pub fn read_events(path: &Path) -> Result<(String, Vec<Scalar>)> {
    let b = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
    let bad = |at: usize, m: &str| TrainError::file(path, format!("byte {at}: {m}"));
    let (mut i, mut version, mut out) = (0usize, String::new(), Vec::new());
    while i < b.len() {
        let head = b.get(i..i + 12).ok_or_else(|| bad(i, "truncated record header"))?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8")) as usize;
        if u32::from_le_bytes(head[8..12].try_into().expect("4")) != masked_crc32c(&head[..8]) {
            return Err(bad(i, "length CRC mismatch"));
        }
        let data = b.get(i + 12..i + 12 + len).ok_or_else(|| bad(i, "truncated record"))?;
        let crc = b.get(i + 12 + len..i + 16 + len).ok_or_else(|| bad(i, "truncated record CRC"))?;
        if u32::from_le_bytes(crc.try_into().expect("4")) != masked_crc32c(data) {
            return Err(bad(i, "data CRC mismatch"));
        }
        let ev = fields(data).map_err(|m| bad(i, &m))?;
        let step = ev.iter().find(|f| f.0 == 2).map_or(0, |f| f.3 as i64);
        for (field, _, v, _) in &ev {
            match field {
                3 => version = String::from_utf8_lossy(v).into_owned(),
                5 => {
                    for (_, _, value, _) in fields(v).map_err(|m| bad(i, &m))?.iter().filter(|f| f.0 == 1) {
                        let vf = fields(value).map_err(|m| bad(i, &m))?;
                        let tag = vf.iter().find(|f| f.0 == 1).map(|f| String::from_utf8_lossy(&f.2).into_owned()).unwrap_or_default();
                        if let Some(x) = vf.iter().find(|f| f.0 == 2 && f.1 == 5) {
                            out.push((step, tag, f32::from_le_bytes(x.2[..4].try_into().expect("4"))));
                        }
                    }
                }
                _ => {}
            }
        }
        i += 16 + len;
    }
    Ok((version, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_records_match_the_tfrecord_format() {
        // CRC-32C check value of the standard ("123456789" → 0xE3069283), and the TFRecord mask.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc32c(b""), 0u32.rotate_right(15).wrapping_add(0xa282_ead8));
        let r = record(b"abc");
        assert_eq!(r.len(), 3 + 16);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
    }

    #[test]
    fn events_round_trip_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, &[("train/loss", 2.5), ("train/lr", 1e-3), ("skipped", f32::NAN)]).unwrap();
        w.scalars(300, &[("val/loss", 2.25)]).unwrap();
        w.flush().unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let (version, s) = read_events(w.path()).unwrap();
        assert_eq!(version, "brain.Event:2");
        assert_eq!(s, [(3, "train/loss".to_string(), 2.5), (3, "train/lr".to_string(), 1e-3), (300, "val/loss".to_string(), 2.25)]);
        // A flipped byte is caught by the CRC.
        let mut b = std::fs::read(w.path()).unwrap();
        let n = b.len();
        b[n - 6] ^= 1;
        std::fs::write(w.path(), b).unwrap();
        assert!(read_events(w.path()).unwrap_err().to_string().contains("CRC mismatch"));
    }
}
