//! Reads SFT inputs with the SFT readers and prints what came out: the harness of the readers'
//! peak-memory measurement (README, "SFT reading").
//!
//! usage: `cargo run --example sft_read -- [--keep] FILE...` (each file read as an
//! `[[sft.inputs]]` entry with default settings); wrap in `/usr/bin/time -v` for the peak RSS.
//! Without `--keep` outcomes are counted as they stream by (the reader's own memory); with it
//! they are all kept, as `read_input` and the SFT build keep them.

use std::collections::BTreeMap;
use std::path::Path;

use coretech::sft::config::{SftInput, TaskConfig, TrailingUserTurn};
use coretech::sft::read::{read_input, read_input_with, Outcome, ReadContext, ReadResult};
use coretech::sft::task::TaskResolver;

fn main() -> anyhow::Result<()> {
    let tasks = TaskResolver::new(&TaskConfig::default())?;
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: TrailingUserTurn::Trim, base: Path::new(".") };
    let keep = std::env::args().any(|a| a == "--keep");
    let mut counts = [0u64; 3];
    let mut count = |o: &Outcome| {
        counts[match o {
            Outcome::Example(_) => 0,
            Outcome::Filtered { .. } => 1,
            Outcome::Error { .. } => 2,
        }] += 1
    };
    for path in std::env::args().skip(1).filter(|a| a != "--keep") {
        let input = SftInput::new(path);
        if keep {
            let mut read = ReadResult::default();
            read_input(&input, &cx, &mut read)?;
            read.outcomes.iter().for_each(&mut count);
        } else {
            read_input_with(&input, &cx, &mut BTreeMap::new(), &mut |o| {
                count(&o);
                Ok(())
            })?;
        }
    }
    println!("examples {} filtered {} errors {}", counts[0], counts[1], counts[2]);
    Ok(())
}
