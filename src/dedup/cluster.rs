//! The cluster step's algorithm: candidate pairs → groups → removals, in bounded memory.
//!
//! 1. **Groups.** The buckets step pairs every member of an LSH bucket (and of an exact-text
//!    bucket) with the bucket's first member, unverified. A union-find over those pairs
//!    (paged to disk beyond its budget, see `unionfind`) gives the connected groups: documents
//!    linked by a chain of shared buckets.
//! 2. **Members in keep order.** One streaming pass over the documents' metadata (in input
//!    order) sends every member of a group of two or more to an external sort keyed by
//!    (group, keep policy: source priority, date, id), so each group comes back as one run, best
//!    document first, and only one group is ever held.
//! 3. **Decisions, greedy in keep order.** A member is removed in favour of the kept document of
//!    its group it matches best: an exact twin (same normalized text) if there is one, else the
//!    kept document with the highest estimated Jaccard, if that is at least `threshold`; else it
//!    is kept itself. So every removal names a kept document it was verified against directly,
//!    a group never loses its last document, and every document whose Jaccard with some kept
//!    member of its group reaches the threshold is removed. The kept documents a member is
//!    checked against are found through a finer LSH index over the group's kept documents
//!    (bands of `fine_rows` values: a kept document at Jaccard 0.8 is a candidate with
//!    probability 1 − 7·10⁻⁷ at 4 rows × 27 bands), then filtered by their MinHash estimate
//!    before the verification sketch is compared, so large groups of distinct documents
//!    (templated texts linked by chains of shared buckets) cost no quadratic work. Up to
//!    `max_kept` kept documents per group are indexed; members of larger groups beyond them are
//!    kept and counted. Documents of one source with different identities (see `policy`) are
//!    never matched. With `clustering = "components"` the similarity check is skipped (one
//!    kept document per group and identity, as datatrove does).
//! 4. **Decisions in input order.** The removals go through a second external sort by document
//!    index, so the caller writes its per-shard removal lists and the audit table streaming.
//!
//! Everything is a function of the set of pairs and the documents' facts, never of the order
//! the pairs arrive in, so the result does not depend on thread or task counts.

use std::cmp::{Ordering, Reverse};
use std::io::BufRead;
use std::path::Path;

use super::extsort::{read_exact_or_end, Record, Sorted, Sorter};
use super::minhash::Sketch;
use super::policy::compatible;
use super::unionfind::{UnionFind, MAX_DOCS};
use super::{Clustering, DatePreference, KeepConfig};
use crate::error::{Error, Result};

/// What the cluster step knows about one document (from the signatures step's metadata).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocFacts {
    /// Source name.
    pub source: String,
    /// Date (`YYYY-MM-DD` or empty).
    pub date: String,
    /// Document id.
    pub id: String,
    /// Exact-text key.
    pub exact: u128,
    /// Shingles of the text (0: no near dedup possible).
    pub shingles: u32,
    /// Identity key (0: none).
    pub identity: u64,
    /// Takes part in exact dedup.
    pub exact_on: bool,
    /// Takes part in near dedup.
    pub near_on: bool,
}

/// Random access to the stored sketches.
pub trait SketchSource {
    /// Reads the sketch of document `g` into `out`.
    fn get(&self, g: u64, out: &mut Sketch) -> Result<()>;
    /// Reads the shingle hashes of document `g` (whose sketch is `sketch`) into `out`; false
    /// when none are stored.
    fn shingles(&self, g: u64, sketch: &Sketch, out: &mut Vec<u32>) -> Result<bool>;
}

/// Sorts and deduplicates shingle hashes into a set.
fn to_set(v: &mut Vec<u32>) {
    v.sort_unstable();
    v.dedup();
}

/// Exact Jaccard of two sorted sets.
fn set_jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Settings of one clustering.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    /// Estimated Jaccard a near removal needs.
    pub threshold: f64,
    /// Greedy verified removals or one kept document per group.
    pub clustering: Clustering,
    /// Exact dedup is on.
    pub exact: bool,
    /// Near dedup is on (sketches exist).
    pub near: bool,
    /// The keep policy.
    pub keep: &'a KeepConfig,
    /// Kept documents per group held for the checks.
    pub max_kept: usize,
    /// MinHash values per band of the in-group candidate index.
    pub fine_rows: usize,
    /// Estimates within this distance of the threshold are replaced by the exact Jaccard.
    pub exact_margin: f64,
    /// Verification bins per sketch (0: none).
    pub bins: usize,
    /// Memory for the verification sketches of a group's kept documents, in bytes (beyond it
    /// they are read from disk when needed).
    pub sketch_bytes: usize,
    /// Memory for the union-find pages, in bytes.
    pub union_find_bytes: usize,
    /// Memory of each external sort's buffer, in bytes.
    pub sort_bytes: usize,
    /// Runs merged at once.
    pub fan_in: usize,
}

/// The kind of a removal.
pub const KIND_EXACT: u8 = 0;
/// The kind of a near removal.
pub const KIND_NEAR: u8 = 1;

/// One removal.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Global index of the removed document.
    pub gidx: u64,
    /// Its id.
    pub removed_id: String,
    /// Its source.
    pub removed_source: String,
    /// Id of the kept document it was matched with.
    pub kept_id: String,
    /// Source of the kept document.
    pub kept_source: String,
    /// xxh3-64 of the id of the group's first document in keep order.
    pub cluster_id: u64,
    /// [`KIND_EXACT`] or [`KIND_NEAR`].
    pub kind: u8,
    /// Estimated Jaccard with the kept document (1 for exact).
    pub jaccard: f64,
}

impl Eq for Decision {}
impl PartialOrd for Decision {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Decision {
    fn cmp(&self, o: &Self) -> Ordering {
        self.gidx.cmp(&o.gidx)
    }
}

/// What the clustering found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Groups of two or more documents.
    pub groups: u64,
    /// Documents in such groups.
    pub members: u64,
    /// Removals.
    pub removed: u64,
    /// Similarity checks made.
    pub checks: u64,
    /// Of those, decided on the exact Jaccard (estimate near the threshold).
    pub exact_checks: u64,
    /// Members kept without being checked against every kept document of their group (the
    /// group already held `max_kept` kept documents).
    pub unchecked: u64,
    /// Union-find pages read or written from disk.
    pub page_io: u64,
}

// --- records -------------------------------------------------------------------------------

/// Date in keep order: the preferred end first, documents without a date last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum DateKey {
    Oldest(String),
    Newest(Reverse<String>),
}

/// A group member, ordered by (group, keep policy, index).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Member {
    root: u32,
    prio: u32,
    /// The source name for sources not in the priority list (ordered by name), else empty.
    unlisted: String,
    no_date: bool,
    date: DateKey,
    id: String,
    gidx: u64,
    // Not part of the order (gidx is unique); carried along.
    source: String,
    exact: u128,
    shingles: u32,
    identity: u64,
    flags: u8,
}

const FLAG_EXACT: u8 = 1;
const FLAG_NEAR: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_bytes<const N: usize>(r: &mut impl BufRead) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    if !read_exact_or_end(r, &mut b)? {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "record cut short"));
    }
    Ok(b)
}

fn get_str(r: &mut impl BufRead) -> std::io::Result<String> {
    let n = u32::from_le_bytes(get_bytes::<4>(r)?) as usize;
    let mut b = vec![0u8; n];
    if n > 0 && !read_exact_or_end(r, &mut b)? {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "record cut short"));
    }
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Record for Member {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root.to_le_bytes());
        out.extend_from_slice(&self.prio.to_le_bytes());
        put_str(out, &self.unlisted);
        out.push(self.no_date as u8);
        match &self.date {
            DateKey::Oldest(d) => {
                out.push(0);
                put_str(out, d);
            }
            DateKey::Newest(Reverse(d)) => {
                out.push(1);
                put_str(out, d);
            }
        }
        put_str(out, &self.id);
        out.extend_from_slice(&self.gidx.to_le_bytes());
        put_str(out, &self.source);
        out.extend_from_slice(&self.exact.to_le_bytes());
        out.extend_from_slice(&self.shingles.to_le_bytes());
        out.extend_from_slice(&self.identity.to_le_bytes());
        out.push(self.flags);
    }
    fn decode(r: &mut impl BufRead) -> std::io::Result<Option<Self>> {
        let mut head = [0u8; 4];
        if !read_exact_or_end(r, &mut head)? {
            return Ok(None);
        }
        let root = u32::from_le_bytes(head);
        let prio = u32::from_le_bytes(get_bytes::<4>(r)?);
        let unlisted = get_str(r)?;
        let no_date = get_bytes::<1>(r)?[0] != 0;
        let date = match get_bytes::<1>(r)?[0] {
            0 => DateKey::Oldest(get_str(r)?),
            _ => DateKey::Newest(Reverse(get_str(r)?)),
        };
        let id = get_str(r)?;
        let gidx = u64::from_le_bytes(get_bytes::<8>(r)?);
        let source = get_str(r)?;
        let exact = u128::from_le_bytes(get_bytes::<16>(r)?);
        let shingles = u32::from_le_bytes(get_bytes::<4>(r)?);
        let identity = u64::from_le_bytes(get_bytes::<8>(r)?);
        let flags = get_bytes::<1>(r)?[0];
        Ok(Some(Member { root, prio, unlisted, no_date, date, id, gidx, source, exact, shingles, identity, flags }))
    }
    fn mem_bytes(&self) -> usize {
        let date = match &self.date {
            DateKey::Oldest(d) | DateKey::Newest(Reverse(d)) => d.len(),
        };
        std::mem::size_of::<Self>() + self.unlisted.len() + date + self.id.len() + self.source.len()
    }
}

impl Record for Decision {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.gidx.to_le_bytes());
        put_str(out, &self.removed_id);
        put_str(out, &self.removed_source);
        put_str(out, &self.kept_id);
        put_str(out, &self.kept_source);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.jaccard.to_le_bytes());
    }
    fn decode(r: &mut impl BufRead) -> std::io::Result<Option<Self>> {
        let mut head = [0u8; 8];
        if !read_exact_or_end(r, &mut head)? {
            return Ok(None);
        }
        Ok(Some(Decision {
            gidx: u64::from_le_bytes(head),
            removed_id: get_str(r)?,
            removed_source: get_str(r)?,
            kept_id: get_str(r)?,
            kept_source: get_str(r)?,
            cluster_id: u64::from_le_bytes(get_bytes::<8>(r)?),
            kind: get_bytes::<1>(r)?[0],
            jaccard: f64::from_le_bytes(get_bytes::<8>(r)?),
        }))
    }
    fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.removed_id.len() + self.removed_source.len() + self.kept_id.len() + self.kept_source.len()
    }
}

fn member(keep: &KeepConfig, root: u32, gidx: u64, f: DocFacts) -> Member {
    let listed = keep.source_priority.iter().position(|p| *p == f.source);
    let prio = listed.unwrap_or(keep.source_priority.len()) as u32;
    let date = match keep.date {
        DatePreference::Oldest => DateKey::Oldest(f.date.clone()),
        DatePreference::Newest => DateKey::Newest(Reverse(f.date.clone())),
    };
    Member {
        root,
        prio,
        unlisted: if listed.is_none() { f.source.clone() } else { String::new() },
        no_date: f.date.is_empty(),
        date,
        id: f.id,
        gidx,
        source: f.source,
        exact: f.exact,
        shingles: f.shingles,
        identity: f.identity,
        flags: (f.exact_on as u8 * FLAG_EXACT) | (f.near_on as u8 * FLAG_NEAR),
    }
}

// --- the algorithm -------------------------------------------------------------------------

/// Fine LSH keys of a signature: bands of `rows` values (fewer rows than the bucket step's
/// bands, so a kept document with Jaccard ≥ 0.8 is a candidate with near certainty).
fn fine_keys(sig: &[u32], rows: usize, out: &mut Vec<u64>) {
    out.clear();
    let mut bytes: Vec<u8> = Vec::with_capacity(4 * rows);
    for (b, band) in sig.chunks_exact(rows.max(1)).enumerate() {
        bytes.clear();
        for v in band {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        out.push(xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, b as u64));
    }
}

/// A kept document of the current group.
struct Kept {
    m: Member,
    near: bool,
    /// Its MinHash values (the cheap first check of a candidate).
    sig: Vec<u32>,
    /// Its verification sketch while the group's sketch budget lasts (else read on demand).
    sketch: Option<Sketch>,
}

/// How far below the threshold a candidate's MinHash estimate may fall and still be checked
/// with the verification sketch: five standard errors of a 108-value estimate at Jaccard 0.8
/// (√(0.16/108) ≈ 0.038), so a true near copy is not filtered out.
const PREFILTER_MARGIN: f64 = 0.2;

/// Whether two documents' MinHash signatures are close enough to be worth the verification
/// sketch: the one rule both the buckets step (which pairs join a group) and the decisions
/// (which kept documents a member is checked against) apply, so a pair the buckets step drops
/// is one the decisions would never have accepted.
pub(super) fn worth_checking(threshold: f64, a: &[u32], b: &[u32]) -> bool {
    super::minhash::estimate(a, b) >= threshold - PREFILTER_MARGIN
}

/// The kept documents of the group being decided, with the indexes that find a member's
/// candidates among them without looking at each one.
#[derive(Default)]
struct Group {
    kept: Vec<Kept>,
    /// Fine LSH key → kept documents (indices into `kept`, ascending = keep order).
    fine: std::collections::HashMap<u64, Vec<u32>>,
    /// Exact key → kept documents with that text.
    exact: std::collections::HashMap<u128, Vec<u32>>,
    /// For `components`: the first kept document without identity, of each source, of each identity.
    first_plain: Option<u32>,
    first_of_source: std::collections::HashMap<String, u32>,
    first_of_identity: std::collections::HashMap<u64, u32>,
    /// Kept documents whose sketch is held in memory.
    held: usize,
    /// Shingle sets of kept documents read for exact checks, while their budget lasts.
    sets: std::collections::HashMap<u32, Vec<u32>>,
    sets_bytes: usize,
}

impl Group {
    fn clear(&mut self) {
        self.kept.clear();
        self.fine.clear();
        self.exact.clear();
        self.first_plain = None;
        self.first_of_source.clear();
        self.first_of_identity.clear();
        self.held = 0;
        self.sets.clear();
        self.sets_bytes = 0;
    }

    /// Exact Jaccard of member `ms_set` (a set) and kept document `i` (`None`: no shingle
    /// files). `tmp` and `buf` are scratch space.
    fn exact(
        &mut self,
        i: u32,
        ms_set: &[u32],
        sketches: &dyn SketchSource,
        tmp: &mut Sketch,
        buf: &mut Vec<u32>,
        budget: usize,
    ) -> Result<Option<f64>> {
        if let Some(set) = self.sets.get(&i) {
            return Ok(Some(set_jaccard(ms_set, set)));
        }
        let g = self.kept[i as usize].m.gidx;
        sketches.get(g, tmp)?;
        if !sketches.shingles(g, tmp, buf)? {
            return Ok(None);
        }
        to_set(buf);
        let j = set_jaccard(ms_set, buf);
        if self.sets_bytes + 4 * buf.len() <= budget {
            self.sets_bytes += 4 * buf.len();
            self.sets.insert(i, std::mem::take(buf));
        }
        Ok(Some(j))
    }

    fn add(&mut self, m: Member, near: bool, keys: &[u64], sketch: &Sketch, max_held: usize) {
        let i = self.kept.len() as u32;
        if near {
            for &k in keys {
                self.fine.entry(k).or_default().push(i);
            }
        }
        if m.flags & FLAG_EXACT != 0 {
            self.exact.entry(m.exact).or_default().push(i);
        }
        if m.identity == 0 {
            self.first_plain.get_or_insert(i);
        } else {
            self.first_of_identity.entry(m.identity).or_insert(i);
        }
        self.first_of_source.entry(m.source.clone()).or_insert(i);
        let held = near && self.held < max_held;
        self.held += held as usize;
        let sk = held.then(|| Sketch { bins: sketch.bins.clone(), ..Default::default() });
        self.kept.push(Kept { m, near, sig: if near { sketch.sig.clone() } else { Vec::new() }, sketch: sk });
    }

    /// The first kept document `m` may be a duplicate of (identities permitting).
    fn first_compatible(&self, m: &Member) -> Option<u32> {
        if m.identity == 0 {
            return (!self.kept.is_empty()).then_some(0);
        }
        let other_source = self.first_of_source.iter().filter(|(s, _)| **s != m.source).map(|(_, &i)| i).min();
        [self.first_plain, other_source, self.first_of_identity.get(&m.identity).copied()].into_iter().flatten().min()
    }

    /// Estimated Jaccard of `m` (its sketch in `ms`) and kept document `i`; `tmp` receives a
    /// sketch read from disk.
    fn similarity(&self, i: u32, ms: &Sketch, sketches: &dyn SketchSource, tmp: &mut Sketch) -> Result<f64> {
        let k = &self.kept[i as usize];
        if ms.bins.is_empty() {
            return Ok(super::minhash::estimate(&ms.sig, &k.sig));
        }
        match &k.sketch {
            Some(s) => Ok(super::minhash::sketch_estimate(&ms.bins, &s.bins)),
            None => {
                sketches.get(k.m.gidx, tmp)?;
                Ok(ms.similarity(tmp))
            }
        }
    }
}

/// Clusters `n` documents. `edges` is called once and must feed every candidate pair to its
/// argument; `facts` is called `n` times and yields the documents' facts in index order;
/// `work` is a directory for spill files (removed before returning). Returns the removals in
/// index order and the statistics.
pub fn cluster(
    p: &Params,
    n: u64,
    work: &Path,
    edges: impl FnOnce(&mut dyn FnMut(u64, u64) -> Result<()>) -> Result<()>,
    mut facts: impl FnMut() -> Result<DocFacts>,
    sketches: &dyn SketchSource,
) -> Result<(Sorted<Decision>, Stats)> {
    if n > MAX_DOCS {
        return Err(Error::Other(format!("dedup: {n} documents exceed the {MAX_DOCS} a single cluster step handles")));
    }
    let mut stats = Stats::default();
    let mut uf = UnionFind::new(n as usize, p.union_find_bytes, &work.join("union-find.bin"))?;
    edges(&mut |a, b| {
        if a >= n || b >= n {
            return Err(Error::Other(format!("pair ({a}, {b}) outside the {n} documents (stale work files?)")));
        }
        uf.union(a as u32, b as u32).map(|_| ())
    })?;
    let mut members = Sorter::<Member>::new(&work.join("members"), p.sort_bytes, p.fan_in);
    for g in 0..n {
        let f = facts()?;
        if let Some(root) = uf.group_of(g as u32)? {
            members.push(member(p.keep, root, g, f))?;
            stats.members += 1;
        }
    }
    stats.page_io = uf.page_io;
    uf.remove_file();
    let mut sorted = members.finish()?;
    let mut decisions = Sorter::<Decision>::new(&work.join("decisions"), p.sort_bytes, p.fan_in);
    let mut group = Group::default();
    let mut current: Option<(u32, u64)> = None; // (root, cluster id)
    let mut sketch = Sketch::default();
    let mut tmp = Sketch::default();
    let max_held = p.sketch_bytes / (2 * p.bins.max(1));
    let mut keys: Vec<u64> = Vec::new();
    let mut cands: Vec<u32> = Vec::new();
    let (mut mset, mut kbuf): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    while let Some(m) = sorted.next_entry()? {
        let cluster_id = match current {
            Some((root, cid)) if root == m.root => cid,
            _ => {
                group.clear();
                stats.groups += 1;
                let cid = xxhash_rust::xxh3::xxh3_64(m.id.as_bytes());
                current = Some((m.root, cid));
                cid
            }
        };
        let near = p.near && m.flags & FLAG_NEAR != 0 && m.shingles > 0;
        keys.clear();
        if near {
            sketches.get(m.gidx, &mut sketch)?;
            fine_keys(&sketch.sig, p.fine_rows, &mut keys);
        }
        // (kept index, kind, similarity) of the match.
        let mut best: Option<(u32, u8, f64)> = None;
        if p.exact && m.flags & FLAG_EXACT != 0 {
            if let Some(list) = group.exact.get(&m.exact) {
                let k = list.iter().copied().find(|&i| {
                    let k = &group.kept[i as usize].m;
                    compatible(&m.source, m.identity, &k.source, k.identity)
                });
                best = k.map(|i| (i, KIND_EXACT, 1.0));
            }
        }
        if best.is_none() && p.clustering == Clustering::Components {
            if let Some(i) = group.first_compatible(&m) {
                let jaccard = if near && group.kept[i as usize].near { group.similarity(i, &sketch, sketches, &mut tmp)? } else { 0.0 };
                best = Some((i, KIND_NEAR, jaccard));
            }
        }
        if best.is_none() && near && p.clustering == Clustering::Centers {
            cands.clear();
            for k in &keys {
                if let Some(list) = group.fine.get(k) {
                    cands.extend_from_slice(list);
                }
            }
            cands.sort_unstable();
            cands.dedup();
            let mut mset_loaded = false;
            for &i in &cands {
                let k = &group.kept[i as usize];
                if !compatible(&m.source, m.identity, &k.m.source, k.m.identity) || !worth_checking(p.threshold, &sketch.sig, &k.sig) {
                    continue;
                }
                stats.checks += 1;
                let mut s = group.similarity(i, &sketch, sketches, &mut tmp)?;
                if (s - p.threshold).abs() < p.exact_margin {
                    if !mset_loaded {
                        sketches.shingles(m.gidx, &sketch, &mut mset)?;
                        to_set(&mut mset);
                        mset_loaded = true;
                    }
                    if let Some(x) = group.exact(i, &mset, sketches, &mut tmp, &mut kbuf, p.sketch_bytes)? {
                        stats.exact_checks += 1;
                        s = x;
                    }
                }
                if s >= p.threshold && best.is_none_or(|(_, _, b)| s > b) {
                    best = Some((i, KIND_NEAR, s));
                }
            }
        }
        match best {
            Some((i, kind, jaccard)) => {
                let k = &group.kept[i as usize].m;
                decisions.push(Decision {
                    gidx: m.gidx,
                    removed_id: m.id,
                    removed_source: m.source,
                    kept_id: k.id.clone(),
                    kept_source: k.source.clone(),
                    cluster_id,
                    kind,
                    jaccard,
                })?;
                stats.removed += 1;
            }
            None if group.kept.len() < p.max_kept.max(1) => group.add(m, near, &keys, &sketch, max_held),
            None => stats.unchecked += 1,
        }
    }
    Ok((decisions.finish()?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Sketches given directly: bins of a set of small integers (exact Jaccard); the stored
    /// shingles are the set itself, or the one in `.1` where given (an estimate that errs).
    struct Fixed(HashMap<u64, Vec<u16>>, HashMap<u64, Vec<u32>>);
    impl Fixed {
        fn new(bins: HashMap<u64, Vec<u16>>) -> Self {
            Fixed(bins, HashMap::new())
        }
    }
    impl SketchSource for Fixed {
        fn get(&self, g: u64, out: &mut Sketch) -> Result<()> {
            out.bins = self.0[&g].clone();
            // One signature for all: every kept document is a candidate of every member.
            out.sig = vec![7; 8];
            out.shingles_at = (g, 0);
            Ok(())
        }
        fn shingles(&self, g: u64, sketch: &Sketch, out: &mut Vec<u32>) -> Result<bool> {
            assert_eq!(sketch.shingles_at.0, g, "the sketch of the same document");
            *out = match self.1.get(&g) {
                Some(s) => s.clone(),
                None => self.0[&g].iter().enumerate().filter(|(_, &b)| b == 0).map(|(i, _)| i as u32).collect(),
            };
            Ok(true)
        }
    }

    /// A bins vector over 64 bins holding the members of `set` (bin = value, stored value 0).
    fn bins(set: impl IntoIterator<Item = usize>) -> Vec<u16> {
        let mut b = vec![super::super::minhash::EMPTY_BIN; 64];
        for x in set {
            b[x] = 0;
        }
        b
    }

    fn facts(id: &str, date: &str) -> DocFacts {
        DocFacts {
            source: "wudao".into(),
            date: date.into(),
            id: id.into(),
            exact: xxhash_rust::xxh3::xxh3_128(id.as_bytes()),
            shingles: 10,
            identity: 0,
            exact_on: true,
            near_on: true,
        }
    }

    fn run(docs: &[DocFacts], sk: &Fixed, edges: &[(u64, u64)], clustering: Clustering, budget: usize) -> (Vec<Decision>, Stats) {
        let dir = tempfile::tempdir().unwrap();
        let keep = KeepConfig::default();
        let p = Params {
            threshold: 0.8,
            clustering,
            exact: true,
            near: true,
            keep: &keep,
            max_kept: 16,
            fine_rows: 4,
            exact_margin: 0.05,
            bins: 64,
            sketch_bytes: budget,
            union_find_bytes: budget,
            sort_bytes: budget,
            fan_in: 2,
        };
        let mut it = docs.iter().cloned();
        let (mut sorted, stats) = cluster(
            &p,
            docs.len() as u64,
            dir.path(),
            |f| {
                for &(a, b) in edges {
                    f(a, b)?;
                }
                Ok(())
            },
            || Ok(it.next().unwrap()),
            sk,
        )
        .unwrap();
        let mut out = Vec::new();
        while let Some(d) = sorted.next_entry().unwrap() {
            out.push(d);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.path().is_file()).count(), 0, "spill files removed");
        (out, stats)
    }

    /// The case of the issue: copies linked only through other copies are still removed in
    /// favour of the original they are similar to, never in favour of a removed copy; a document
    /// that matches no kept document stays, though it shares a bucket with them.
    #[test]
    fn every_copy_of_a_family_goes_in_favour_of_a_kept_document() {
        // 0: original (oldest); 1..5 copies (pairwise similar, J 0.9 with the original);
        // 6: an unrelated document in the same group (shared one bucket).
        let base: Vec<usize> = (0..40).collect();
        let mut map = HashMap::new();
        let mut docs = Vec::new();
        docs.push(facts("w:0", "2020-01-01"));
        map.insert(0, bins(base.clone()));
        for c in 1..6u64 {
            docs.push(facts(&format!("w:{c}"), "2021-01-01"));
            // Drop two elements, add two others: J = 38/42 ≈ 0.905 with the original.
            let mut s: Vec<usize> = base.iter().copied().filter(|&x| x != c as usize && x != c as usize + 10).collect();
            s.extend([40 + c as usize, 50 + c as usize]);
            map.insert(c, bins(s));
        }
        docs.push(facts("w:6", "2019-01-01"));
        map.insert(6, bins(20..64));
        // A chain: 5-4, 4-3, 3-2, 2-1, 1-6 (the original only reachable through copies).
        let edges = [(5, 4), (4, 3), (3, 2), (2, 1), (1, 6), (0, 5)];
        for budget in [1 << 20, 1] {
            let (d, st) = run(&docs, &Fixed::new(map.clone()), &edges, Clustering::Centers, budget);
            let removed: Vec<(u64, &str)> = d.iter().map(|x| (x.gidx, x.kept_id.as_str())).collect();
            assert_eq!(removed, vec![(1, "w:0"), (2, "w:0"), (3, "w:0"), (4, "w:0"), (5, "w:0")]);
            assert!(d.iter().all(|x| x.kind == KIND_NEAR && x.jaccard > 0.9 && x.jaccard < 0.91));
            assert_eq!((st.groups, st.members, st.removed, st.unchecked), (1, 7, 5, 0));
            // All share one cluster id: that of the group's first document (w:6, the oldest).
            assert!(d.iter().all(|x| x.cluster_id == xxhash_rust::xxh3::xxh3_64(b"w:6")));
        }
        // `components`: everything but the best document goes, unverified.
        let (d, _) = run(&docs, &Fixed::new(map), &edges, Clustering::Components, 1 << 20);
        assert_eq!(d.len(), 6);
        assert!(d.iter().all(|x| x.kept_id == "w:6"));
    }

    #[test]
    fn identities_and_exact_twins() {
        let mut map = HashMap::new();
        let mut a = facts("ipc:A", "");
        a.source = "ipc".into();
        a.identity = 11;
        let mut b = facts("ipc:B", "");
        b.source = "ipc".into();
        b.identity = 12;
        let mut a2 = facts("ipc:A#2", "");
        a2.source = "ipc".into();
        a2.identity = 11;
        a2.exact = a.exact;
        let mut w = facts("wudao:copy-of-b", "");
        w.exact = b.exact;
        for g in 0..4 {
            map.insert(g, bins(0..40));
        }
        let docs = vec![a, b, a2, w];
        let (d, _) = run(&docs, &Fixed::new(map), &[(0, 1), (1, 2), (2, 3)], Clustering::Centers, 1 << 20);
        let got: Vec<(&str, &str, u8)> = d.iter().map(|x| (x.removed_id.as_str(), x.kept_id.as_str(), x.kind)).collect();
        // B is kept beside A (another code); A's twin goes as exact; the web copy of B goes as
        // B's exact twin, though A is as similar and comes first.
        assert_eq!(got, vec![("ipc:A#2", "ipc:A", KIND_EXACT), ("wudao:copy-of-b", "ipc:B", KIND_EXACT)]);
    }

    /// Near the threshold the exact Jaccard decides: an estimate of 0.79 over sets at 0.85 is
    /// a removal (recorded with the exact value), an estimate of 0.82 over sets at 0.70 is not.
    #[test]
    fn estimates_near_the_threshold_are_checked_exactly() {
        let mut bins_map = HashMap::new();
        let mut sets = HashMap::new();
        // Bins: 0..100 vs 0..79 ∪ 100..(100+?): estimate 79/100 = 0.79 (under 0.8).
        bins_map.insert(0, bins_n(0..100));
        bins_map.insert(1, bins_n(0..79));
        // Exact sets: J = 85/100.
        sets.insert(0, (0..100).collect::<Vec<u32>>());
        sets.insert(1, (0..85).collect::<Vec<u32>>());
        // Doc 2: estimate 0.82, exact 0.70.
        bins_map.insert(2, bins_n(0..82));
        sets.insert(2, (0..70).collect::<Vec<u32>>());
        let docs = vec![facts("w:0", "2020-01-01"), facts("w:1", "2021-01-01"), facts("w:2", "2021-01-01")];
        let (d, st) = run(&docs, &Fixed(bins_map, sets), &[(0, 1), (0, 2)], Clustering::Centers, 1 << 20);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].gidx, d[0].kept_id.as_str(), d[0].jaccard), (1, "w:0", 0.85));
        assert_eq!(st.exact_checks, 2);
    }

    fn bins_n(set: std::ops::Range<usize>) -> Vec<u16> {
        let mut b = vec![super::super::minhash::EMPTY_BIN; 128];
        for x in set {
            b[x] = 0;
        }
        b
    }
}
