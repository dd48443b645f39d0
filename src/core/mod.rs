//! Foundations every stage builds on, below all of them (they import nothing above `error`):
//! the run report and its accounting ([`report`]), the task split of multi-machine builds
//! ([`task`]), fingerprints of configs and input files ([`fingerprint`]), crash-safe writes and
//! digests ([`fsio`]), the per-output lock ([`lock`]), seeded randomness ([`rng`]) and config checks against
//! the schema their types generate ([`schema`]).

pub mod fingerprint;
pub mod fsio;
pub mod lock;
pub mod report;
pub mod rng;
pub mod schema;
pub mod task;

pub use fingerprint::{hash_of, Fingerprint};

/// `#[serde(default = "crate::core::default_true")]`: a switch that is on unless the config
/// turns it off.
pub(crate) fn default_true() -> bool {
    true
}
pub use report::{RunReport, SourceStats};
pub use task::{RunOptions, TaskSplit};
