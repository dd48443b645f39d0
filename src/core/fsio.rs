//! Crash-safe file writing and content digests: write to `NAME.tmp`, fsync, rename, fsync the
//! directory, so a killed run never leaves a half-written file under a final name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `path` with `.tmp` appended to the file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path);
    Ok(())
}

/// Writes `value` as pretty JSON with a trailing newline, atomically.
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("value serializes");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Persists a rename or creation in `path`'s directory. A directory that cannot be opened for
/// fsync is not fatal (some platforms refuse it).
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Streams a file through `update` in 1 MiB blocks.
fn for_each_block(path: &Path, mut update: impl FnMut(&[u8])) -> Result<u64> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        update(&buf[..n]);
        total += n as u64;
    }
    Ok(total)
}

/// sha256 of a file's bytes, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for_each_block(path, |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

/// xxh3-128 of a file's bytes (streamed), as hex: the content part of input fingerprints.
pub fn xxh3_file(path: &Path) -> Result<(u64, String)> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let n = for_each_block(path, |b| h.update(b))?;
    Ok((n, format!("{:032x}", h.digest128())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_file_and_digests_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"hello").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert!(!tmp_path(&p).exists());
        assert_eq!(sha256_file(&p).unwrap(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let (n, x) = xxh3_file(&p).unwrap();
        assert_eq!((n, x), (5, format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b"hello"))));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
