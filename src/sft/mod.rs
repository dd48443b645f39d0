//! SFT data: LLaMA-Factory alpaca/sharegpt inputs, IPC validation, decontamination, difficulty
//! grading, curriculum stages and ChatML templating, packed into SFT token shards.
//!
//! `coretech sft <config>` (or the `sft` stage of `coretech run`, through
//! `pipeline::run_sft`) runs [`build::run`];
//! `coretech sft grade <config>` stops after grading; `coretech sft stats <dir>` prints the
//! statistics of a built directory; `coretech export llamafactory <config>` writes the graded
//! stages as LLaMA-Factory datasets ([`export`]).

pub mod bench;
pub mod build;
pub mod config;
pub mod decontam;
pub mod example;
pub mod export;
pub mod grade;
pub mod grade_model;
pub mod pack;
pub mod read;
pub mod report;
pub mod split;
pub mod stats;
pub mod task;
pub mod template;
pub mod text;
pub mod tokenizer;
pub mod validate;

pub use build::{run, Mode};
pub use config::SftConfig;
pub use example::{Example, Message, Role, Split};
pub use report::SftReport;
