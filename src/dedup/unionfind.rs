//! Union-find over global document indices whose memory is bounded by a budget: the parent
//! array (4 bytes per document) lives in pages; when it is larger than the budget, the least
//! recently used pages go to a file in the work directory and are read back on demand (the
//! page cache, not the process, holds what is not hot). Linking is by smaller index, so the
//! root of a set is its smallest member and the sets and roots do not depend on the order of
//! the unions; path halving keeps the finds short.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Set on a root that has other members (the low 31 bits are the index itself).
const HAS_MEMBERS: u32 = 1 << 31;
const INDEX: u32 = HAS_MEMBERS - 1;
/// Entries per page (16 KiB): small, since the unions touch pages at random.
const PAGE: usize = 4096;
const NONE: u32 = u32::MAX;

/// The largest number of documents one union-find holds (31-bit indices).
pub const MAX_DOCS: u64 = INDEX as u64 + 1;

/// Disjoint sets of `0..n` in at most `budget_bytes` of memory (plus a small page table).
pub struct UnionFind {
    n: usize,
    /// Page number → slot in `slots` (`NONE`: not resident); 4 bytes per 4,096 documents.
    resident: Vec<u32>,
    slots: Vec<Slot>,
    max_slots: usize,
    /// Clock hand for eviction.
    hand: usize,
    /// Pages written to the file at least once (else they are still the identity).
    written: Vec<bool>,
    file: Option<(PathBuf, File)>,
    spill_path: PathBuf,
    /// Page reads and writes from the file (for tests and the log).
    pub page_io: u64,
}

struct Slot {
    page: usize,
    data: Box<[u32]>,
    dirty: bool,
    used: bool,
}

impl UnionFind {
    /// `n` singletons; pages beyond `budget_bytes` spill to `spill_path` (created only if needed).
    pub fn new(n: usize, budget_bytes: usize, spill_path: &Path) -> Result<Self> {
        if n as u64 > MAX_DOCS {
            return Err(Error::Other(format!("dedup: {n} documents exceed the {MAX_DOCS} one cluster step handles")));
        }
        let pages = n.div_ceil(PAGE);
        let max_slots = (budget_bytes / (PAGE * 4)).clamp(2, pages.max(2));
        Ok(Self {
            n,
            resident: vec![NONE; pages],
            slots: Vec::new(),
            max_slots,
            hand: 0,
            written: vec![false; pages],
            file: None,
            spill_path: spill_path.to_path_buf(),
            page_io: 0,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn slot_of(&mut self, page: usize) -> Result<usize> {
        let s = self.resident[page];
        if s != NONE {
            let s = s as usize;
            self.slots[s].used = true;
            return Ok(s);
        }
        let s = if self.slots.len() < self.max_slots {
            self.slots.push(Slot { page, data: vec![0u32; PAGE].into_boxed_slice(), dirty: false, used: true });
            self.slots.len() - 1
        } else {
            // Clock: the first slot not used since the hand last passed it goes.
            let h = loop {
                let h = self.hand;
                self.hand = (self.hand + 1) % self.slots.len();
                if self.slots[h].used {
                    self.slots[h].used = false;
                } else {
                    break h;
                }
            };
            if self.slots[h].dirty {
                self.write_page(h)?;
            }
            self.resident[self.slots[h].page] = NONE;
            h
        };
        let base = page * PAGE;
        if self.written[page] {
            let (path, f) = self.file.as_ref().expect("a written page has a file");
            let mut bytes = vec![0u8; PAGE * 4];
            f.read_exact_at(&mut bytes, (base * 4) as u64).map_err(|e| Error::io(path, e))?;
            for (d, c) in self.slots[s].data.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = u32::from_le_bytes(c.try_into().unwrap());
            }
            self.page_io += 1;
        } else {
            for (i, d) in self.slots[s].data.iter_mut().enumerate() {
                *d = (base + i) as u32;
            }
        }
        self.slots[s].page = page;
        self.slots[s].dirty = false;
        self.slots[s].used = true;
        self.resident[page] = s as u32;
        Ok(s)
    }

    fn write_page(&mut self, s: usize) -> Result<()> {
        if self.file.is_none() {
            if let Some(d) = self.spill_path.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.spill_path)
                .map_err(|e| Error::io(&self.spill_path, e))?;
            self.file = Some((self.spill_path.clone(), f));
        }
        let (path, f) = self.file.as_ref().unwrap();
        let page = self.slots[s].page;
        let bytes: Vec<u8> = self.slots[s].data.iter().flat_map(|v| v.to_le_bytes()).collect();
        f.write_all_at(&bytes, (page * PAGE * 4) as u64).map_err(|e| Error::io(path, e))?;
        self.written[page] = true;
        self.slots[s].dirty = false;
        self.page_io += 1;
        Ok(())
    }

    fn get(&mut self, x: u32) -> Result<u32> {
        let s = self.slot_of(x as usize / PAGE)?;
        Ok(self.slots[s].data[x as usize % PAGE])
    }

    fn set(&mut self, x: u32, v: u32) -> Result<()> {
        let s = self.slot_of(x as usize / PAGE)?;
        self.slots[s].data[x as usize % PAGE] = v;
        self.slots[s].dirty = true;
        Ok(())
    }

    /// The representative (smallest member) of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> Result<u32> {
        loop {
            let p = self.get(x)? & INDEX;
            if p == x {
                return Ok(x);
            }
            let gp = self.get(p)? & INDEX;
            if gp == p {
                return Ok(p);
            }
            // Path halving: x skips its parent.
            self.set(x, gp)?;
            x = gp;
        }
    }

    /// Joins the sets of `a` and `b`; returns whether they were separate.
    pub fn union(&mut self, a: u32, b: u32) -> Result<bool> {
        let (ra, rb) = (self.find(a)?, self.find(b)?);
        if ra == rb {
            return Ok(false);
        }
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.set(hi, lo)?;
        self.set(lo, lo | HAS_MEMBERS)?;
        Ok(true)
    }

    /// The representative of `x`'s set when the set has other members, else `None`.
    pub fn group_of(&mut self, x: u32) -> Result<Option<u32>> {
        let e = self.get(x)?;
        if e & INDEX != x {
            return self.find(x).map(Some);
        }
        Ok((e & HAS_MEMBERS != 0).then_some(x))
    }

    /// Removes the spill file, if any.
    pub fn remove_file(mut self) {
        if let Some((p, f)) = self.file.take() {
            drop(f);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::SplitMix64;

    #[test]
    fn joins_transitively_with_the_smallest_member_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = UnionFind::new(6, 1 << 20, &dir.path().join("uf")).unwrap();
        assert!(u.union(4, 1).unwrap());
        assert!(u.union(2, 1).unwrap());
        assert!(!u.union(4, 2).unwrap());
        assert_eq!(u.find(4).unwrap(), 1);
        assert_eq!(u.group_of(2).unwrap(), Some(1));
        assert_eq!(u.group_of(1).unwrap(), Some(1));
        assert_eq!(u.group_of(3).unwrap(), None);
        assert_eq!(u.group_of(5).unwrap(), None);
        assert!(!dir.path().join("uf").exists(), "in budget: no file");
    }

    /// A budget of two pages over 40 pages of elements: the sets equal those of the in-memory
    /// run, whatever the order of the unions, and pages went through the file.
    #[test]
    fn paged_sets_equal_in_memory_sets_in_any_union_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = 40 * PAGE;
        let mut rng = SplitMix64::new(5);
        let mut pairs: Vec<(u32, u32)> = (0..30_000).map(|_| (rng.below(n as u64) as u32, rng.below(n as u64) as u32)).collect();
        let mut big = UnionFind::new(n, usize::MAX / 2, &dir.path().join("a")).unwrap();
        for &(a, b) in &pairs {
            big.union(a, b).unwrap();
        }
        pairs.reverse();
        let mut small = UnionFind::new(n, 1, &dir.path().join("b")).unwrap();
        for &(a, b) in &pairs {
            small.union(b, a).unwrap();
        }
        for x in 0..n as u32 {
            assert_eq!(big.group_of(x).unwrap(), small.group_of(x).unwrap(), "element {x}");
        }
        assert_eq!(big.page_io, 0);
        assert!(small.page_io > 100, "{}", small.page_io);
        assert!(dir.path().join("b").exists());
        small.remove_file();
        assert!(!dir.path().join("b").exists());
    }
}
