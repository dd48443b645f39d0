//! Where this process sits in a multi-process job: rank, world size, local rank and the
//! rendezvous address, read the way the field's launchers hand them over.
//!
//! * `torchrun` (and `torch.distributed.launch`, DeepSpeed, accelerate): `RANK`, `WORLD_SIZE`,
//!   `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
//! * Slurm (`srun` one task per GPU): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; the
//!   master is `MASTER_ADDR` when set, else the first host of `SLURM_JOB_NODELIST`; the port is
//!   `MASTER_PORT`, else [`DEFAULT_PORT`].
//!
//! torchrun's variables win when both sets are present (`srun torchrun …` sets both, and then
//! `SLURM_PROCID` is the node's index, not the process's). Neither set: a single process.
//!
//! **Rendezvous.** torchrun's agent already listens on `MASTER_PORT` (its c10d TCPStore; it says
//! so with `TORCHELASTIC_USE_AGENT_STORE=True`), so rank 0 must not: it listens on a free port
//! and publishes its address in that store ([`Rendezvous::Store`], `store.rs`). Under Slurm, a
//! manual `RANK`/`WORLD_SIZE` launch or a launcher without an agent store, rank 0 listens on
//! `MASTER_PORT` itself ([`Rendezvous::Listen`]).

use super::super::error::{Result, TrainError};

/// Rendezvous port when Slurm gives none (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// Which launcher the values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// No launcher variables: one process.
    Single,
    /// torchrun-style variables.
    Torchrun,
    /// Slurm task variables.
    Slurm,
}

/// How the ranks find rank 0's collective listener.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rendezvous {
    /// Rank 0 listens on `MASTER_PORT`; the others connect there.
    Listen,
    /// `MASTER_PORT` is torchrun's c10d TCPStore: rank 0 listens on a free port and sets `key`
    /// to its `host:port` there; the others wait for the key.
    Store {
        /// The store key (per torchrun restart attempt, so a restarted group never reads the
        /// address of the attempt before).
        key: String,
        /// Processes on this node (`LOCAL_WORLD_SIZE`): fewer than the world means several
        /// nodes, and then rank 0 must publish an address the other nodes can reach.
        local_world_size: usize,
    },
}

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Launch {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this node (the GPU ordinal to use).
    pub local_rank: usize,
    /// Host of rank 0's rendezvous listener.
    pub master_addr: String,
    /// Port of rank 0's rendezvous listener.
    pub master_port: u16,
    /// Where the values came from.
    pub launcher: Launcher,
    /// How the ranks meet.
    pub rendezvous: Rendezvous,
}

fn bad(var: &str, msg: impl std::fmt::Display) -> TrainError {
    TrainError::config(format!("env {var}"), msg.to_string())
}

fn parse_usize(var: &str, v: &str) -> Result<usize> {
    v.trim().parse::<usize>().map_err(|_| bad(var, format!("{v:?} is not a non-negative integer")))
}

fn parse_port(var: &str, v: &str) -> Result<u16> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(var, format!("{v:?} is not a TCP port (1-65535)"))),
    }
}

impl Launch {
    /// A single process: rank 0 of 1.
    pub fn single() -> Launch {
        Launch {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_PORT,
            launcher: Launcher::Single,
            rendezvous: Rendezvous::Listen,
        }
    }

    /// Rank `rank` of `world` on one host, meeting at `127.0.0.1:port` where rank 0 listens
    /// (tests and the rank threads of `coretech bench train --world-size`).
    pub fn local(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            rank,
            world_size: world,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            launcher: Launcher::Torchrun,
            rendezvous: Rendezvous::Listen,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Launch> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map; the process uses [`Launch::from_env`]).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let torchrun = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"];
        // MASTER_ADDR/MASTER_PORT alone do not make a torchrun launch: Slurm jobs set them too.
        let launch = if torchrun[..3].iter().any(|k| get(k).is_some()) {
            let missing: Vec<&str> = torchrun.iter().copied().filter(|k| get(k).is_none()).collect();
            if !missing.is_empty() {
                return Err(bad(
                    missing[0],
                    format!(
                        "torchrun-style launch needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; missing: {}",
                        missing.join(", ")
                    ),
                ));
            }
            let v = |k: &str| get(k).expect("checked above");
            let world_size = parse_usize("WORLD_SIZE", &v("WORLD_SIZE"))?;
            // torch sets it with str(bool): "True" / "False".
            let rendezvous = match get("TORCHELASTIC_USE_AGENT_STORE").as_deref().map(str::trim) {
                Some("True") | Some("true") | Some("1") => {
                    let attempt = match get("TORCHELASTIC_RESTART_COUNT") {
                        Some(c) => parse_usize("TORCHELASTIC_RESTART_COUNT", &c)?,
                        None => 0,
                    };
                    let local_world_size = match get("LOCAL_WORLD_SIZE") {
                        Some(n) => parse_usize("LOCAL_WORLD_SIZE", &n)?,
                        None => world_size,
                    };
                    Rendezvous::Store { key: format!("/coretech/attempt_{attempt}/rank0_addr"), local_world_size }
                }
                _ => Rendezvous::Listen,
            };
            Launch {
                rank: parse_usize("RANK", &v("RANK"))?,
                world_size,
                local_rank: parse_usize("LOCAL_RANK", &v("LOCAL_RANK"))?,
                master_addr: v("MASTER_ADDR").trim().to_string(),
                master_port: parse_port("MASTER_PORT", &v("MASTER_PORT"))?,
                launcher: Launcher::Torchrun,
                rendezvous,
            }
        } else if get("SLURM_PROCID").is_some() {
            let need = |k: &str| get(k).ok_or_else(|| bad(k, "a Slurm launch (SLURM_PROCID is set) needs it; run under srun"));
            let world = match get("SLURM_NTASKS").or_else(|| get("SLURM_NPROCS")) {
                Some(v) => parse_usize("SLURM_NTASKS", &v)?,
                None => return Err(bad("SLURM_NTASKS", "a Slurm launch (SLURM_PROCID is set) needs it; run under srun")),
            };
            let rank = parse_usize("SLURM_PROCID", &need("SLURM_PROCID")?)?;
            let local_rank = parse_usize("SLURM_LOCALID", &need("SLURM_LOCALID")?)?;
            let master_addr = match get("MASTER_ADDR") {
                Some(a) => a.trim().to_string(),
                None => {
                    let list = get("SLURM_JOB_NODELIST")
                        .or_else(|| get("SLURM_NODELIST"))
                        .ok_or_else(|| bad("SLURM_JOB_NODELIST", "not set and no MASTER_ADDR: cannot tell where rank 0 listens"))?;
                    first_host(&list).map_err(|m| bad("SLURM_JOB_NODELIST", m))?
                }
            };
            let master_port = match get("MASTER_PORT") {
                Some(p) => parse_port("MASTER_PORT", &p)?,
                None => DEFAULT_PORT,
            };
            Launch {
                rank,
                world_size: world,
                local_rank,
                master_addr,
                master_port,
                launcher: Launcher::Slurm,
                rendezvous: Rendezvous::Listen,
            }
        } else {
            return Ok(Launch::single());
        };
        launch.validate()?;
        Ok(launch)
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<()> {
        let (rank_var, world_var, local_var) = match self.launcher {
            Launcher::Slurm => ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
            _ => ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
        };
        if self.world_size == 0 {
            return Err(bad(world_var, "must be >= 1"));
        }
        if self.rank >= self.world_size {
            return Err(bad(rank_var, format!("rank {} is not below the world size {}", self.rank, self.world_size)));
        }
        if self.local_rank >= self.world_size {
            return Err(bad(local_var, format!("local rank {} is not below the world size {}", self.local_rank, self.world_size)));
        }
        if self.master_addr.is_empty() || self.master_addr.contains(char::is_whitespace) {
            return Err(bad("MASTER_ADDR", format!("{:?} is not a host name or address", self.master_addr)));
        }
        Ok(())
    }
}

/// The first host of a Slurm hostlist: `gpu[003-005,9],login1` → `gpu003`, `a-[1-2]-ib` → `a-1-ib`.
pub fn first_host(list: &str) -> std::result::Result<String, String> {
    let list = list.trim();
    // The first item ends at the first comma outside brackets.
    let mut depth = 0i32;
    let mut end = list.len();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("{list:?} is not a Slurm hostlist (unbalanced brackets)"));
        }
    }
    let item = &list[..end];
    let mut host = String::new();
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        host.push_str(&rest[..open]);
        let close =
            rest[open..].find(']').map(|c| open + c).ok_or_else(|| format!("{list:?} is not a Slurm hostlist (no closing bracket)"))?;
        let inner = &rest[open + 1..close];
        let first = inner.split(',').next().unwrap_or("").split('-').next().unwrap_or("").trim();
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{list:?} is not a Slurm hostlist (range [{inner}])"));
        }
        host.push_str(first);
        rest = &rest[close + 1..];
    }
    if rest.contains(']') {
        return Err(format!("{list:?} is not a Slurm hostlist (unbalanced brackets)"));
    }
    host.push_str(rest);
    if host.is_empty() {
        return Err(format!("{list:?} names no host"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    fn torchrun(rank: &str, world: &str) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", rank.to_string()),
            ("WORLD_SIZE", world.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("MASTER_ADDR", "10.0.0.7".to_string()),
            ("MASTER_PORT", "29511".to_string()),
        ]
    }

    fn with(v: &[(&'static str, String)]) -> Result<Launch> {
        let m: HashMap<String, String> = v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn no_variables_is_a_single_process() {
        assert_eq!(launch(&[]).unwrap(), Launch::single());
        // Empty values count as unset (a shell `export RANK=`).
        assert_eq!(launch(&[("RANK", " ")]).unwrap(), Launch::single());
    }

    #[test]
    fn torchrun_variables_are_read() {
        let l = with(&torchrun("1", "2")).unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank, l.master_port), (1, 2, 1, 29511));
        assert_eq!(l.master_addr, "10.0.0.7");
        assert_eq!(l.launcher, Launcher::Torchrun);
        // torchrun's values win over Slurm's (srun torchrun sets both).
        let mut v = torchrun("3", "4");
        v.push(("SLURM_PROCID", "0".into()));
        v.push(("SLURM_NTASKS", "1".into()));
        assert_eq!(with(&v).unwrap().rank, 3);
    }

    #[test]
    fn torchruns_agent_store_moves_the_rendezvous_into_the_store() {
        // Without TORCHELASTIC_USE_AGENT_STORE (a manual launch), rank 0 listens on MASTER_PORT.
        assert_eq!(with(&torchrun("0", "2")).unwrap().rendezvous, Rendezvous::Listen);
        let mut v = torchrun("1", "4");
        v.push(("TORCHELASTIC_USE_AGENT_STORE", "True".into()));
        v.push(("TORCHELASTIC_RESTART_COUNT", "3".into()));
        v.push(("LOCAL_WORLD_SIZE", "2".into()));
        let l = with(&v).unwrap();
        assert_eq!(l.rendezvous, Rendezvous::Store { key: "/coretech/attempt_3/rank0_addr".into(), local_world_size: 2 });
        assert_eq!((l.rank, l.master_port), (1, 29511));
        v[5].1 = "False".into();
        assert_eq!(with(&v).unwrap().rendezvous, Rendezvous::Listen);
        v[5].1 = "True".into();
        v[6].1 = "x".into();
        assert!(with(&v).unwrap_err().to_string().contains("env TORCHELASTIC_RESTART_COUNT"));
    }

    #[test]
    fn slurm_variables_are_read_with_the_first_node_as_master() {
        let l = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[003-004,9],login1"),
        ])
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (5, 8, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port, l.launcher), ("gpu003", DEFAULT_PORT, Launcher::Slurm));
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_NODELIST", "gpu[003-004]"),
            ("MASTER_ADDR", "head"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!((l.master_addr.as_str(), l.master_port), ("head", 4000));
    }

    #[test]
    fn hostlists_give_their_first_host() {
        assert_eq!(first_host("n1").unwrap(), "n1");
        assert_eq!(first_host("n1,n2").unwrap(), "n1");
        assert_eq!(first_host("gpu[07-12]").unwrap(), "gpu07");
        assert_eq!(first_host("a-[1-2]-ib[3,4]").unwrap(), "a-1-ib3");
        assert_eq!(first_host("rack[2,5-6]x,b").unwrap(), "rack2x");
        for bad in ["gpu[07-12", "gpu]1", "gpu[]", "gpu[a-b]", "", "[[1]]"] {
            assert!(first_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = |v: &[(&'static str, String)]| with(v).unwrap_err().to_string();
        // A partial torchrun set lists what is missing.
        let e = err(&[("RANK", "0".into()), ("WORLD_SIZE", "2".into())]);
        assert!(e.contains("env LOCAL_RANK") && e.contains("MASTER_ADDR, MASTER_PORT"), "{e}");
        let mut v = torchrun("2", "2");
        assert!(err(&v).contains("env RANK: rank 2 is not below the world size 2"), "{}", err(&v));
        v = torchrun("0", "0");
        assert!(err(&v).contains("env WORLD_SIZE: must be >= 1"));
        v = torchrun("x", "2");
        assert!(err(&v).contains("env RANK: \"x\" is not a non-negative integer"));
        v = torchrun("-1", "2");
        assert!(err(&v).contains("env RANK"));
        v = torchrun("0", "2");
        v[4].1 = "70000".into();
        assert!(err(&v).contains("env MASTER_PORT: \"70000\" is not a TCP port"));
        v[4].1 = "0".into();
        assert!(err(&v).contains("env MASTER_PORT"));
        v = torchrun("0", "2");
        v[2].1 = "5".into();
        assert!(err(&v).contains("env LOCAL_RANK: local rank 5"));
        v = torchrun("0", "2");
        v[3].1 = "a host".into();
        assert!(err(&v).contains("env MASTER_ADDR"));
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")]).unwrap_err().to_string();
        assert!(e.contains("env SLURM_NTASKS"), "{e}");
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).unwrap_err().to_string();
        assert!(e.contains("env SLURM_LOCALID"), "{e}");
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_LOCALID", "0")]).unwrap_err().to_string();
        assert!(e.contains("env SLURM_JOB_NODELIST") && e.contains("MASTER_ADDR"), "{e}");
        let e =
            launch(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "2"), ("SLURM_LOCALID", "0"), ("MASTER_ADDR", "h")]).unwrap_err().to_string();
        assert!(e.contains("env SLURM_PROCID: rank 4"), "{e}");
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_LOCALID", "0"), ("SLURM_JOB_NODELIST", "g[1-")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Slurm hostlist"), "{e}");
    }
}
