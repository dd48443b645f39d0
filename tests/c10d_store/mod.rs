//! A stand-in for torchrun's agent in tests: a minimal c10d TCPStore server (the wire format of
//! `torch/csrc/distributed/c10d/TCPStore*.cpp`: VALIDATE, SET, GET, ADD, CHECK, WAIT,
//! CANCEL_WAIT) that holds the port it listens on, as the agent holds `MASTER_PORT`. Like torch's
//! libuv server it drops a connection whose first query is not VALIDATE with the magic number.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;

/// The store's contents, shared with the connection threads.
#[derive(Default)]
pub struct Shared {
    pub keys: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
    /// Connections dropped for not validating first.
    pub rejected: Mutex<u32>,
}

/// A running store; it lives until the test process ends.
pub struct StoreServer {
    pub port: u16,
    pub shared: Arc<Shared>,
}

impl StoreServer {
    /// Listens on a free localhost port.
    pub fn start() -> StoreServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &sh);
                });
            }
        });
        StoreServer { port, shared }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.keys.lock().unwrap().get(key).cloned()
    }
}

fn read_n<const N: usize>(s: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn read_bytes(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let n = u64::from_le_bytes(read_n::<8>(s)?) as usize;
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

fn read_key(s: &mut TcpStream) -> std::io::Result<String> {
    Ok(String::from_utf8(read_bytes(s)?).unwrap())
}

fn write_bytes(s: &mut TcpStream, v: &[u8]) -> std::io::Result<()> {
    s.write_all(&(v.len() as u64).to_le_bytes())?;
    s.write_all(v)
}

fn serve(mut s: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let first = read_n::<1>(&mut s)?[0];
    if first != 0 || u32::from_le_bytes(read_n::<4>(&mut s)?) != VALIDATION_MAGIC {
        *sh.rejected.lock().unwrap() += 1;
        return Ok(());
    }
    loop {
        let q = read_n::<1>(&mut s)?[0];
        match q {
            1 => {
                let k = read_key(&mut s)?;
                let v = read_bytes(&mut s)?;
                sh.keys.lock().unwrap().insert(k, v);
                sh.changed.notify_all();
            }
            3 => {
                let k = read_key(&mut s)?;
                let v = sh.keys.lock().unwrap().get(&k).cloned().unwrap_or_default();
                write_bytes(&mut s, &v)?;
            }
            4 => {
                let k = read_key(&mut s)?;
                let d = i64::from_le_bytes(read_n::<8>(&mut s)?);
                let mut keys = sh.keys.lock().unwrap();
                let cur: i64 = keys.get(&k).map(|v| String::from_utf8_lossy(v).parse().unwrap()).unwrap_or(0);
                keys.insert(k, (cur + d).to_string().into_bytes());
                sh.changed.notify_all();
                s.write_all(&(cur + d).to_le_bytes())?;
            }
            5 | 6 => {
                let n = u64::from_le_bytes(read_n::<8>(&mut s)?);
                let keys: Vec<String> = (0..n).map(|_| read_key(&mut s)).collect::<std::io::Result<_>>()?;
                let ready = |m: &HashMap<String, Vec<u8>>| keys.iter().all(|k| m.contains_key(k));
                if q == 5 {
                    let r = ready(&sh.keys.lock().unwrap());
                    s.write_all(&[u8::from(!r)])?;
                    continue;
                }
                // WAIT: answer STOP_WAITING once every key exists, or WAIT_CANCELED on CANCEL_WAIT.
                loop {
                    let m = sh.keys.lock().unwrap();
                    if ready(&m) {
                        drop(m);
                        s.write_all(&[0])?;
                        break;
                    }
                    let _ = sh.changed.wait_timeout(m, Duration::from_millis(50)).unwrap();
                    s.set_nonblocking(true)?;
                    let mut b = [0u8; 1];
                    let got = s.read(&mut b);
                    s.set_nonblocking(false)?;
                    match got {
                        Ok(1) if b[0] == 12 => {
                            s.write_all(&[1])?;
                            break;
                        }
                        Ok(0) => return Ok(()),
                        Ok(_) => panic!("stand-in store: query {} during a wait", b[0]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            12 => s.write_all(&[1])?,
            other => panic!("stand-in store: query type {other} is not served here"),
        }
    }
}
