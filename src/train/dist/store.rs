//! A client of PyTorch's c10d `TCPStore`, the key-value store torchrun's agent holds on
//! `MASTER_PORT`: just the queries our rendezvous needs (validate, set, wait, get).
//!
//! torchrun (torch ≥ 2.2) starts the store in its agent and tells the workers so with
//! `TORCHELASTIC_USE_AGENT_STORE=True`; the port is then taken, so rank 0 cannot listen there.
//! Instead rank 0 listens on a free port and publishes `host:port` in the store; the other ranks
//! wait for the key and connect there (see `tcp.rs`). Hand-written: the wire format is a few
//! framed queries and no Rust crate speaks it.
//!
//! **Wire format** (`torch/csrc/distributed/c10d/TCPStore.cpp`, `TCPStoreBackend.hpp`; all
//! integers little-endian, as the x86/ARM hosts torch runs on write them): a query is one byte
//! of query type followed by its arguments; a string or byte vector is a `u64` length and the
//! bytes. A new connection first sends `VALIDATE` with the magic `0x3C85F7CE` (no reply).
//! `SET key value` has no reply; `WAIT n key…` replies one byte (`STOP_WAITING`) once every key
//! exists; `GET key` replies the value as a byte vector; `CANCEL_WAIT` (after a timed-out wait)
//! replies `WAIT_CANCELED`, possibly after a late `STOP_WAITING`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::super::error::{Result, TrainError};

/// `c10d::detail::validationMagicNumber`.
const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;
/// Pause between connection attempts while the store is not up yet.
const RETRY: Duration = Duration::from_millis(100);

/// `c10d::detail::QueryType` (the order of the enum is the wire value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Query {
    /// First query of a connection: the magic number.
    Validate = 0,
    /// Store a value.
    Set = 1,
    /// Read a value (the key must exist: wait first).
    Get = 3,
    /// Block until keys exist.
    Wait = 6,
    /// Stop a wait that timed out on the client side.
    CancelWait = 12,
}

/// `c10d::detail::WaitResponseType`.
const STOP_WAITING: u8 = 0;
const WAIT_CANCELED: u8 = 1;

/// One connection to a c10d TCPStore.
#[derive(Debug)]
pub struct StoreClient {
    stream: TcpStream,
    addr: String,
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

impl StoreClient {
    /// Connects to the store at `host:port` (retrying until `timeout` while it is not up) and
    /// validates the connection.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<StoreClient> {
        let addr = format!("{host}:{port}");
        let err = |what: &str, e: &dyn std::fmt::Display| {
            TrainError::Dist(format!("torchrun's store at {addr} (MASTER_ADDR:MASTER_PORT): {what}: {e}"))
        };
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let tried = addr
                .to_socket_addrs()
                .map_err(|e| err("cannot resolve", &e))
                .and_then(|mut a| a.next().ok_or_else(|| err("cannot resolve", &"no address")))
                .and_then(|a: SocketAddr| TcpStream::connect_timeout(&a, timeout).map_err(|e| err("cannot connect", &e)));
            match tried {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(RETRY),
            }
        };
        stream.set_nodelay(true).map_err(|e| err("socket", &e))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| err("socket", &e))?;
        let mut c = StoreClient { stream, addr };
        let mut q = vec![Query::Validate as u8];
        q.extend_from_slice(&VALIDATION_MAGIC.to_le_bytes());
        c.send(&q, "validate")?;
        Ok(c)
    }

    /// The local address of the connection: the address this host has on the path to the store
    /// (what other hosts reach it by, unless it is a loopback address).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr().map_err(|e| self.err("socket", e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> TrainError {
        TrainError::Dist(format!("torchrun's store at {}: {what}: {e}", self.addr))
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.stream.write_all(bytes).and_then(|_| self.stream.flush()).map_err(|e| self.err(what, e))
    }

    fn read_u8(&mut self, what: &str) -> Result<u8> {
        let mut b = [0u8; 1];
        self.stream.read_exact(&mut b).map_err(|e| self.err(what, e))?;
        Ok(b[0])
    }

    /// Stores `value` under `key`.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let mut q = vec![Query::Set as u8];
        put_bytes(&mut q, key.as_bytes());
        put_bytes(&mut q, value);
        self.send(&q, &format!("set {key}"))
    }

    /// Waits until `key` exists (at most `timeout`), then reads it.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.wait(key, timeout)?;
        let mut q = vec![Query::Get as u8];
        put_bytes(&mut q, key.as_bytes());
        let what = format!("get {key}");
        self.send(&q, &what)?;
        self.stream.set_read_timeout(Some(timeout)).map_err(|e| self.err("socket", e))?;
        let mut len = [0u8; 8];
        self.stream.read_exact(&mut len).map_err(|e| self.err(&what, e))?;
        let len = u64::from_le_bytes(len);
        // A rendezvous value is a host:port; anything large is not a store answering us.
        if len > 1 << 20 {
            return Err(self.err(&what, format!("a {len}-byte value: not a c10d TCPStore reply")));
        }
        let mut v = vec![0u8; len as usize];
        self.stream.read_exact(&mut v).map_err(|e| self.err(&what, e))?;
        Ok(v)
    }

    /// Blocks until `key` exists, at most `timeout` (then cancels the wait and fails).
    pub fn wait(&mut self, key: &str, timeout: Duration) -> Result<()> {
        let mut q = vec![Query::Wait as u8];
        q.extend_from_slice(&1u64.to_le_bytes());
        put_bytes(&mut q, key.as_bytes());
        let what = format!("wait for {key}");
        self.send(&q, &what)?;
        self.stream.set_read_timeout(Some(timeout)).map_err(|e| self.err("socket", e))?;
        let mut b = [0u8; 1];
        match self.stream.read_exact(&mut b) {
            Ok(()) if b[0] == STOP_WAITING => Ok(()),
            Ok(()) => Err(self.err(&what, format!("reply {} is not STOP_WAITING", b[0]))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                // Tell the store to forget the wait; it answers WAIT_CANCELED (after a
                // STOP_WAITING if the key came meanwhile).
                self.send(&[Query::CancelWait as u8], "cancel wait")?;
                let mut r = self.read_u8("cancel wait")?;
                if r == STOP_WAITING {
                    r = self.read_u8("cancel wait")?;
                }
                if r != WAIT_CANCELED {
                    return Err(self.err("cancel wait", format!("reply {r} is not WAIT_CANCELED")));
                }
                Err(self.err(&what, format!("the key did not appear within {} s", timeout.as_secs_f64())))
            }
            Err(e) => Err(self.err(&what, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_framed_as_torch_frames_them() {
        // SET "k" "ab": type 1, u64 1, "k", u64 2, "ab".
        let mut q = vec![Query::Set as u8];
        put_bytes(&mut q, b"k");
        put_bytes(&mut q, b"ab");
        assert_eq!(q, [1, 1, 0, 0, 0, 0, 0, 0, 0, b'k', 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
        assert_eq!(VALIDATION_MAGIC.to_le_bytes(), [0xCE, 0xF7, 0x85, 0x3C]);
        assert_eq!((Query::Get as u8, Query::Wait as u8, Query::CancelWait as u8), (3, 6, 12));
    }

    #[test]
    fn a_store_that_is_not_there_is_named_after_the_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = StoreClient::connect("127.0.0.1", port, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(e.contains("torchrun's store at 127.0.0.1:") && e.contains("cannot connect"), "{e}");
    }
}
