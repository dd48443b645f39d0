//! One writer per output folder: an advisory lock (`flock`, through std's `File::try_lock`) on
//! `DIR/.coretech.lock`, held for the whole stage and released by the kernel when the process
//! ends, however it ends. A second process fails at once with the holder's pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".coretech.lock";

/// A held lock on an output folder; dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: Option<File>,
}

impl OutputLock {
    /// Locks `dir` (which must exist) or fails at once naming the pid that holds it.
    pub fn acquire(dir: &Path) -> Result<OutputLock> {
        let path = dir.join(LOCK_FILE);
        // A holder removes the file before it unlocks, so a lock taken on a file that is no
        // longer at `path` is stale: try again on the new one.
        for _ in 0..100 {
            let mut file =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    let pid = pid.trim();
                    let who = if pid.is_empty() { "another process".to_string() } else { format!("pid {pid}") };
                    return Err(Error::Other(format!(
                        "{}: output locked by {who} (another coretech run is writing this folder; {} is its lock)",
                        dir.display(),
                        LOCK_FILE
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| write!(file, "{}", std::process::id()))
                .map_err(|e| Error::io(&path, e))?;
            return Ok(OutputLock { path, file: Some(file) });
        }
        Err(Error::Other(format!("{}: could not take the lock (the lock file keeps changing)", path.display())))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove first, then unlock: a process that opened the old file sees it is gone.
        let _ = std::fs::remove_file(&self.path);
        if let Some(f) = self.file.take() {
            let _ = f.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_with_the_pid_and_the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = OutputLock::acquire(dir.path()).unwrap();
        let e = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("output locked by pid {}", std::process::id())), "{e}");
        drop(a);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let _b = OutputLock::acquire(dir.path()).unwrap();
    }
}
