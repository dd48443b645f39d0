//! Collectives over TCP for CPU runs and tests (hand-written: no gloo binding for Rust exists;
//! this is a star, not a ring, so its traffic through rank 0 grows with the world size — fine for
//! CPU ranks, which are compute-bound; GPUs use NCCL).
//!
//! **Rendezvous.** Rank 0 listens on `MASTER_PORT` (all interfaces) and every other rank
//! connects to `MASTER_ADDR:MASTER_PORT` — or, under torchrun, whose agent holds that port with
//! its c10d store, rank 0 listens on a free port and publishes `host:port` in the store, where
//! the others read it ([`Rendezvous::Store`]). Each rank retries until the timeout and says hello
//! (its rank and world size). Rank 0 checks that every rank from 1 to W−1 arrived exactly once
//! with the same world size, then acknowledges.
//!
//! **Operations.** Every operation is one frame from each rank to rank 0 (`op`, sequence
//! number, payload) and one frame back. Rank 0 reads the frames in rank order and sums in rank
//! order (`x₀ + x₁ + … + x_{W−1}`, f32, left to right), so every rank gets bit-identical results
//! that do not depend on which rank arrived first. A frame with another op or sequence number
//! means the ranks called collectives in different orders: an error naming both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::super::error::{Result, TrainError};
use super::collective::{flat_len, Collective};
use super::launch::{Launch, Rendezvous};
use super::store::StoreClient;

const MAGIC: u32 = 0x4354_4443; // "CTDC"
const HEADER: usize = 24;
/// Pause between connection attempts while rank 0 is not listening yet.
const RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Hello = 1,
    AllReduce = 2,
    ReduceScatter = 3,
    AllGather = 4,
    Broadcast = 5,
    GatherF64 = 6,
    Barrier = 7,
    Bytes = 8,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::AllReduce => "all_reduce_sum",
            Op::ReduceScatter => "reduce_scatter",
            Op::AllGather => "all_gather",
            Op::Broadcast => "broadcast",
            Op::GatherF64 => "all_gather_f64",
            Op::Barrier => "barrier",
            Op::Bytes => "broadcast_bytes",
        }
    }

    fn from_u8(b: u8) -> Option<Op> {
        [Op::Hello, Op::AllReduce, Op::ReduceScatter, Op::AllGather, Op::Broadcast, Op::GatherF64, Op::Barrier, Op::Bytes]
            .into_iter()
            .find(|o| *o as u8 == b)
    }
}

/// One rank's end of a TCP process group.
#[derive(Debug)]
pub struct TcpCollective {
    rank: usize,
    world: usize,
    /// Rank 0: the stream of rank `r` at index `r − 1`. Other ranks: the one stream to rank 0.
    streams: Vec<TcpStream>,
    seq: u64,
}

fn io_err(rank: usize, what: impl std::fmt::Display, e: impl std::fmt::Display) -> TrainError {
    TrainError::Dist(format!("rank {rank}: {what}: {e}"))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f64(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

impl TcpCollective {
    /// Joins the group `launch` describes; waits at most `timeout` for the rendezvous, and
    /// afterwards for any single message.
    pub fn connect(launch: &Launch, timeout: Duration) -> Result<TcpCollective> {
        launch.validate()?;
        let (rank, world) = (launch.rank, launch.world_size);
        let deadline = Instant::now() + timeout;
        let streams = if world == 1 {
            Vec::new()
        } else if rank == 0 {
            let listener = listen(launch, timeout)?;
            let port = listener.local_addr().map_err(|e| io_err(0, "listener", e))?.port();
            listener.set_nonblocking(true).map_err(|e| io_err(0, "listener", e))?;
            let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            let mut have = 0;
            while have < world - 1 {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).map_err(|e| io_err(0, "socket", e))?;
                        configure(&s, timeout).map_err(|e| io_err(0, "socket", e))?;
                        let (op, _, payload) = read_frame(&mut s).map_err(|e| io_err(0, format!("hello from {peer}"), e))?;
                        let v: Vec<u64> = payload.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect();
                        if op != Op::Hello as u8 || v.len() != 2 {
                            return Err(TrainError::Dist(format!("rank 0: {peer} connected to MASTER_PORT but did not say hello")));
                        }
                        let (r, w) = (v[0] as usize, v[1] as usize);
                        if w != world {
                            return Err(TrainError::Dist(format!(
                                "rank {r} (from {peer}) has world size {w}, rank 0 has {world}: every rank needs the same WORLD_SIZE"
                            )));
                        }
                        if r == 0 || r >= world || slots[r - 1].is_some() {
                            return Err(TrainError::Dist(format!(
                                "a second process claims rank {r} (from {peer}): every rank needs its own RANK, 0 to {}",
                                world - 1
                            )));
                        }
                        slots[r - 1] = Some(s);
                        have += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            let missing: Vec<String> =
                                slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| (i + 1).to_string()).collect();
                            return Err(TrainError::Dist(format!(
                                "rank 0: ranks {} did not join within {} s (port {port})",
                                missing.join(", "),
                                timeout.as_secs_f64(),
                            )));
                        }
                        std::thread::sleep(RETRY / 5);
                    }
                    Err(e) => return Err(io_err(0, "accept", e)),
                }
            }
            let mut streams: Vec<TcpStream> = slots.into_iter().map(|s| s.expect("all arrived")).collect();
            for (i, s) in streams.iter_mut().enumerate() {
                write_frame(s, Op::Hello, 0, &(world as u64).to_le_bytes()).map_err(|e| io_err(0, format!("ack to rank {}", i + 1), e))?;
            }
            streams
        } else {
            let addr = match &launch.rendezvous {
                Rendezvous::Listen => format!("{}:{}", launch.master_addr, launch.master_port),
                Rendezvous::Store { key, .. } => {
                    let mut store = StoreClient::connect(&launch.master_addr, launch.master_port, timeout)?;
                    let left = deadline.saturating_duration_since(Instant::now()).max(RETRY);
                    let v =
                        store.get(key, left).map_err(|e| TrainError::Dist(format!("rank {rank}: waiting for rank 0's address: {e}")))?;
                    String::from_utf8(v).map_err(|_| TrainError::Dist(format!("rank {rank}: store key {key} is not a host:port")))?
                }
            };
            let mut s = loop {
                let tried = addr.to_socket_addrs().map_err(|e| io_err(rank, format!("MASTER_ADDR {addr}"), e)).and_then(|mut a| {
                    let a = a.next().ok_or_else(|| io_err(rank, format!("MASTER_ADDR {addr}"), "resolves to no address"))?;
                    TcpStream::connect_timeout(&a, timeout).map_err(|e| io_err(rank, format!("connect to rank 0 at {addr}"), e))
                });
                match tried {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(RETRY),
                }
            };
            configure(&s, timeout).map_err(|e| io_err(rank, "socket", e))?;
            let hello: Vec<u8> = [rank as u64, world as u64].iter().flat_map(|x| x.to_le_bytes()).collect();
            write_frame(&mut s, Op::Hello, 0, &hello).map_err(|e| io_err(rank, "hello to rank 0", e))?;
            let (op, _, _) = read_frame(&mut s).map_err(|e| io_err(rank, "waiting for rank 0 to acknowledge", e))?;
            if op != Op::Hello as u8 {
                return Err(TrainError::Dist(format!("rank {rank}: rank 0 answered the hello with op {op}")));
            }
            vec![s]
        };
        Ok(TcpCollective { rank, world, streams, seq: 0 })
    }

    /// One round: every rank sends `payload`; rank 0 turns the payloads (in rank order) into one
    /// reply per rank with `reply`, which the others receive.
    fn round(&mut self, op: Op, payload: Vec<u8>, reply: impl FnOnce(Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>) -> Result<Vec<u8>> {
        self.seq += 1;
        let seq = self.seq;
        if self.world == 1 {
            return Ok(reply(vec![payload])?.swap_remove(0));
        }
        if self.rank == 0 {
            let mut all = Vec::with_capacity(self.world);
            all.push(payload);
            for (i, s) in self.streams.iter_mut().enumerate() {
                let r = i + 1;
                let (got, gseq, p) = read_frame(s).map_err(|e| io_err(0, format!("{} #{seq}: receiving from rank {r}", op.name()), e))?;
                check(0, r, op, seq, got, gseq)?;
                all.push(p);
            }
            let mut replies = reply(all)?;
            for (i, s) in self.streams.iter_mut().enumerate() {
                write_frame(s, op, seq, &replies[i + 1])
                    .map_err(|e| io_err(0, format!("{} #{seq}: sending to rank {}", op.name(), i + 1), e))?;
            }
            Ok(replies.swap_remove(0))
        } else {
            let rank = self.rank;
            let s = &mut self.streams[0];
            write_frame(s, op, seq, &payload).map_err(|e| io_err(rank, format!("{} #{seq}: sending to rank 0", op.name()), e))?;
            let (got, gseq, p) = read_frame(s).map_err(|e| io_err(rank, format!("{} #{seq}: waiting for rank 0", op.name()), e))?;
            check(rank, 0, op, seq, got, gseq)?;
            Ok(p)
        }
    }

    /// Sum of every rank's `buf` (same length everywhere), written back into `buf`.
    pub fn all_reduce_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        let out = self.round(Op::AllReduce, f32_bytes(buf), |all| {
            let acc = sum_in_rank_order(Op::AllReduce, &all, n)?;
            let bytes = f32_bytes(&acc);
            Ok(vec![bytes; all.len()])
        })?;
        buf.copy_from_slice(&bytes_f32(&out));
        Ok(())
    }

    /// Rank `r`'s chunk `[r·m, (r+1)·m)` of the sum of every rank's `buf` (`W·m` elements).
    pub fn reduce_scatter_f32(&mut self, buf: &[f32]) -> Result<Vec<f32>> {
        let n = buf.len();
        let w = self.world;
        if !n.is_multiple_of(w) {
            return Err(TrainError::Dist(format!("reduce_scatter: {n} elements do not split into {w} equal chunks")));
        }
        let m = n / w;
        let out = self.round(Op::ReduceScatter, f32_bytes(buf), |all| {
            let acc = sum_in_rank_order(Op::ReduceScatter, &all, n)?;
            Ok((0..w).map(|r| f32_bytes(&acc[r * m..(r + 1) * m])).collect())
        })?;
        Ok(bytes_f32(&out))
    }

    /// Every rank's `buf` (same length everywhere), concatenated in rank order.
    pub fn all_gather_f32(&mut self, buf: &[f32]) -> Result<Vec<f32>> {
        let n = buf.len();
        let out = self.round(Op::AllGather, f32_bytes(buf), |all| {
            same_lengths(Op::AllGather, &all, n * 4)?;
            let cat: Vec<u8> = all.concat();
            Ok(vec![cat; all.len()])
        })?;
        Ok(bytes_f32(&out))
    }

    /// Rank `root`'s `buf` on every rank.
    pub fn broadcast_f32(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let out = self.broadcast_bytes(Op::Broadcast, f32_bytes(buf), root)?;
        if out.len() != buf.len() * 4 {
            return Err(TrainError::Dist(format!(
                "broadcast: rank {root} sent {} elements, rank {} expected {}",
                out.len() / 4,
                self.rank,
                buf.len()
            )));
        }
        buf.copy_from_slice(&bytes_f32(&out));
        Ok(())
    }

    /// Rank `root`'s bytes on every rank (the NCCL unique id travels this way).
    pub fn broadcast_raw(&mut self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        self.broadcast_bytes(Op::Bytes, bytes, root)
    }

    fn broadcast_bytes(&mut self, op: Op, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        if root >= self.world {
            return Err(TrainError::Dist(format!("broadcast from rank {root} in a group of {}", self.world)));
        }
        self.round(op, bytes, |mut all| {
            let data = std::mem::take(&mut all[root]);
            Ok(vec![data; all.len()])
        })
    }
}

/// Rank 0's listener: on `MASTER_PORT`, or (torchrun's agent holds that port) on a free port
/// whose address goes into torchrun's store.
fn listen(launch: &Launch, timeout: Duration) -> Result<TcpListener> {
    match &launch.rendezvous {
        Rendezvous::Listen => TcpListener::bind(("0.0.0.0", launch.master_port))
            .map_err(|e| io_err(0, format!("cannot listen on port {} (MASTER_PORT)", launch.master_port), e)),
        Rendezvous::Store { key, local_world_size } => {
            let mut store = StoreClient::connect(&launch.master_addr, launch.master_port, timeout)?;
            // The address this host has towards the store is one the other hosts reach, unless it
            // is a loopback address and other nodes take part: then the host name.
            let local = store.local_addr()?.ip();
            let any: std::net::IpAddr =
                if local.is_ipv6() { std::net::Ipv6Addr::UNSPECIFIED.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() };
            let listener = TcpListener::bind((any, 0)).map_err(|e| io_err(0, "cannot listen on a free port", e))?;
            let port = listener.local_addr().map_err(|e| io_err(0, "listener", e))?.port();
            let addr = if local.is_loopback() && *local_world_size < launch.world_size {
                format!(
                    "{}:{port}",
                    host_name().ok_or_else(|| io_err(
                        0,
                        "several nodes, store reached over loopback",
                        "this host has no name to publish"
                    ))?
                )
            } else {
                std::net::SocketAddr::new(local, port).to_string()
            };
            store.set(key, addr.as_bytes())?;
            tracing::debug!("rank 0 listens on {addr} (published in torchrun's store as {key})");
            Ok(listener)
        }
    }
}

/// This host's name (Linux: the kernel's), for other nodes to resolve.
fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    let h = h.trim().to_string();
    (!h.is_empty()).then_some(h)
}

fn check(me: usize, peer: usize, op: Op, seq: u64, got: u8, gseq: u64) -> Result<()> {
    if got != op as u8 || gseq != seq {
        let theirs = Op::from_u8(got).map(Op::name).unwrap_or("an unknown operation");
        return Err(TrainError::Dist(format!(
            "rank {me} called {} as collective #{seq} while rank {peer} called {theirs} as #{gseq}: ranks must call collectives in the same order",
            op.name()
        )));
    }
    Ok(())
}

fn same_lengths(op: Op, all: &[Vec<u8>], bytes: usize) -> Result<()> {
    if let Some((r, p)) = all.iter().enumerate().find(|(_, p)| p.len() != bytes) {
        return Err(TrainError::Dist(format!("{}: rank {r} sent {} bytes, rank 0 {bytes}: lengths must match", op.name(), p.len())));
    }
    Ok(())
}

/// `x₀ + x₁ + … + x_{W−1}` element-wise, left to right (the fixed order every rank relies on).
fn sum_in_rank_order(op: Op, all: &[Vec<u8>], n: usize) -> Result<Vec<f32>> {
    same_lengths(op, all, n * 4)?;
    let mut acc = bytes_f32(&all[0]);
    for p in &all[1..] {
        for (a, c) in acc.iter_mut().zip(p.chunks_exact(4)) {
            *a += f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(acc)
}

fn configure(s: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))
}

fn write_frame(s: &mut TcpStream, op: Op, seq: u64, payload: &[u8]) -> std::io::Result<()> {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = op as u8;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    s.write_all(&h)?;
    s.write_all(payload)?;
    s.flush()
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, u64, Vec<u8>)> {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h)?;
    if u32::from_le_bytes(h[0..4].try_into().expect("4")) != MAGIC {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a coretech collective frame"));
    }
    let len = u64::from_le_bytes(h[16..24].try_into().expect("8")) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[4], u64::from_le_bytes(h[8..16].try_into().expect("8")), p))
}

fn host(op: &str, t: &Tensor) -> Result<Vec<f32>> {
    flat_len(op, t)?;
    Ok(t.to_vec1::<f32>()?)
}

fn back(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    let n = v.len();
    Ok(Tensor::from_vec(v, n, like.device())?)
}

impl Collective for TcpCollective {
    fn name(&self) -> &'static str {
        "tcp"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        let mut v = host("all_reduce_sum", t)?;
        self.all_reduce_f32(&mut v)?;
        back(v, t)
    }
    fn reduce_scatter(&mut self, t: &Tensor) -> Result<Tensor> {
        let v = host("reduce_scatter", t)?;
        back(self.reduce_scatter_f32(&v)?, t)
    }
    fn all_gather(&mut self, t: &Tensor) -> Result<Tensor> {
        let v = host("all_gather", t)?;
        back(self.all_gather_f32(&v)?, t)
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Tensor> {
        let mut v = host("broadcast", t)?;
        self.broadcast_f32(&mut v, root)?;
        back(v, t)
    }
    fn all_gather_f64(&mut self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        let k = v.len();
        let out = self.round(Op::GatherF64, f64_bytes(v), |all| {
            same_lengths(Op::GatherF64, &all, k * 8)?;
            let cat: Vec<u8> = all.concat();
            Ok(vec![cat; all.len()])
        })?;
        let flat = bytes_f64(&out);
        Ok((0..self.world).map(|r| flat[r * k..(r + 1) * k].to_vec()).collect())
    }
    fn barrier(&mut self) -> Result<()> {
        self.round(Op::Barrier, Vec::new(), |all| Ok(vec![Vec::new(); all.len()]))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn launch(rank: usize, world: usize, port: u16) -> Launch {
        Launch::local(rank, world, port)
    }

    /// Runs `f` on `world` ranks (threads), returns their results in rank order.
    fn group<T: Send + 'static>(world: usize, f: impl Fn(TcpCollective) -> T + Send + Sync + 'static) -> Vec<T> {
        let port = free_port();
        let f = std::sync::Arc::new(f);
        let hs: Vec<_> = (0..world)
            .map(|r| {
                let f = f.clone();
                std::thread::spawn(move || f(TcpCollective::connect(&launch(r, world, port), Duration::from_secs(20)).unwrap()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_agree_on_every_rank_and_sum_in_rank_order() {
        let out = group(3, |mut c| {
            let r = c.rank() as f32;
            // Values whose f32 sum depends on the order: only rank order gives `expected` below.
            let mut v = vec![[1e8, 1.0, -1e8][c.rank()], 1.0 + r, r * 0.1, 3.0];
            c.all_reduce_f32(&mut v).unwrap();
            let rs = c.reduce_scatter_f32(&[r, 10.0 * r, 100.0, 1.0, 2.0, r]).unwrap();
            let ag = c.all_gather_f32(&[r, -r]).unwrap();
            let mut b = vec![r; 3];
            c.broadcast_f32(&mut b, 2).unwrap();
            let g = c.all_gather_f64(&[r as f64, 7.0]).unwrap();
            c.barrier().unwrap();
            (v, rs, ag, b, g)
        });
        for (r, (v, rs, ag, b, g)) in out.iter().enumerate() {
            assert_eq!(v, &out[0].0, "rank {r} all_reduce differs");
            assert_eq!(v[1], 1.0 + 2.0 + 3.0);
            assert_eq!(v[2], (0.0f32 + 0.1) + 0.2);
            // (1e8 + 1) + -1e8 is 0 in f32; any other order gives 1.
            assert_eq!(v[0], 0.0);
            let full = [0.0 + 1.0 + 2.0, 0.0 + 10.0 + 20.0, 300.0, 3.0, 6.0, 3.0];
            assert_eq!(rs.as_slice(), &full[2 * r..2 * r + 2]);
            assert_eq!(ag, &[0.0, -0.0, 1.0, -1.0, 2.0, -2.0]);
            assert_eq!(b, &[2.0; 3]);
            assert_eq!(g, &vec![vec![0.0, 7.0], vec![1.0, 7.0], vec![2.0, 7.0]]);
        }
    }

    #[test]
    fn tensor_collectives_keep_shape_and_device() {
        let out = group(2, |mut c| {
            let r = c.rank() as f32;
            let t = Tensor::new(&[r, 1.0, 2.0, r], &candle_core::Device::Cpu).unwrap();
            let s = c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
            let rs = c.reduce_scatter(&t).unwrap().to_vec1::<f32>().unwrap();
            let ag = c.all_gather(&t.narrow(0, 0, 1).unwrap()).unwrap().to_vec1::<f32>().unwrap();
            let bad = c.all_reduce_sum(&Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap());
            (s, rs, ag, bad.is_err())
        });
        assert_eq!(out[0].0, [1.0, 2.0, 4.0, 1.0]);
        assert_eq!(out[1].1, [4.0, 1.0]);
        assert_eq!(out[0].2, [0.0, 1.0]);
        assert!(out[0].3 && out[1].3);
    }

    #[test]
    fn mismatched_calls_and_lengths_are_errors_not_hangs() {
        let out = group(2, |mut c| {
            if c.rank() == 0 {
                c.barrier().map_err(|e| e.to_string())
            } else {
                let mut v = vec![1.0];
                c.all_reduce_f32(&mut v).map_err(|e| e.to_string())
            }
        });
        let e = out[0].as_ref().unwrap_err();
        assert!(e.contains("rank 0 called barrier as collective #1 while rank 1 called all_reduce_sum"), "{e}");
        let out = group(2, |mut c| {
            let v = vec![1.0; 1 + c.rank()];
            c.all_gather_f32(&v).map_err(|e| e.to_string())
        });
        let e = out[0].as_ref().unwrap_err();
        assert!(e.contains("all_gather: rank 1 sent 8 bytes, rank 0 4"), "{e}");
    }

    #[test]
    fn rendezvous_errors_name_the_problem() {
        // Rank 1 of 2 alone: nobody listens, so it gives up after the timeout.
        let port = free_port();
        let e = TcpCollective::connect(&launch(1, 2, port), Duration::from_millis(300)).unwrap_err().to_string();
        assert!(e.contains("rank 1: connect to rank 0 at 127.0.0.1:"), "{e}");
        // Rank 0 of 3 with only rank 1 joining names the missing rank.
        let port = free_port();
        let h = std::thread::spawn(move || TcpCollective::connect(&launch(1, 3, port), Duration::from_secs(2)));
        let e = TcpCollective::connect(&launch(0, 3, port), Duration::from_millis(1500)).unwrap_err().to_string();
        assert!(e.contains("ranks 2 did not join"), "{e}");
        assert!(h.join().unwrap().is_err());
        // Two processes claiming the same rank, and a wrong world size.
        let port = free_port();
        let a = std::thread::spawn(move || TcpCollective::connect(&launch(1, 3, port), Duration::from_secs(2)).map(|_| ()));
        let b = std::thread::spawn(move || TcpCollective::connect(&launch(1, 3, port), Duration::from_secs(2)).map(|_| ()));
        let e = TcpCollective::connect(&launch(0, 3, port), Duration::from_secs(2)).unwrap_err().to_string();
        assert!(e.contains("a second process claims rank 1"), "{e}");
        let _ = (a.join(), b.join());
        let port = free_port();
        let a = std::thread::spawn(move || TcpCollective::connect(&launch(1, 4, port), Duration::from_secs(2)).map(|_| ()));
        let e = TcpCollective::connect(&launch(0, 2, port), Duration::from_secs(2)).unwrap_err().to_string();
        assert!(e.contains("rank 1") && e.contains("world size 4, rank 0 has 2"), "{e}");
        let _ = a.join();
    }
}
