//! Token ids of every fixture SFT example equal transformers' `apply_chat_template` with the
//! Qwen2.5 chat template, and the loss mask equals LLaMA-Factory's `qwen` labels, with and
//! without `cutoff_len` truncation. The golden file is written by
//! `tests/golden/make_sft_ids.py` (see its docstring for the rules it reproduces).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use coretech::sft::config::{SftInput, TaskConfig, TrailingUserTurn};
use coretech::sft::read::{read_input, Outcome, ReadContext, ReadResult};
use coretech::sft::task::TaskResolver;
use coretech::sft::template::{render, render_chat, tokenize, truncate, DEFAULT_SYSTEM_PROMPT};
use coretech::sft::tokenizer::SftTokenizer;
use coretech::sft::{Message, Role};
use coretech::tokenize::Engine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    file: String,
    ordinal: u64,
    input_ids: Vec<u32>,
    mask: Vec<[usize; 2]>,
    cutoff: Option<usize>,
    trunc_ids: Option<Vec<u32>>,
    trunc_mask: Option<Vec<[usize; 2]>>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spans(mask: &[u8]) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().chain(std::iter::once(&0)).enumerate() {
        match (m, start) {
            (1, None) => start = Some(i),
            (0, Some(s)) => {
                out.push([s, i]);
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn input(path: &Path) -> SftInput {
    SftInput::new(path.to_path_buf())
}

#[test]
fn ids_match_apply_chat_template_and_mask_matches_llamafactory_labels() {
    let golden_path = root().join("fixtures/golden/sft/qwen2.5_chatml.jsonl.zst");
    let text = zstd::decode_all(std::fs::File::open(&golden_path).unwrap()).unwrap();
    let mut golden: HashMap<(String, u64), Golden> = HashMap::new();
    for line in BufReader::new(&text[..]).lines() {
        let g: Golden = serde_json::from_str(&line.unwrap()).unwrap();
        golden.insert((g.file.clone(), g.ordinal), g);
    }
    assert_eq!(golden.len(), 682, "every fixture example is in the golden file");

    let path = root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst");
    // The default engine takes the fast path for this tokenizer; HF is the reference.
    let fast = SftTokenizer::load(&path).unwrap();
    assert_eq!(fast.engine(), "fast");
    let hf = SftTokenizer::load_with(&path, Engine::Hf).unwrap();
    assert_eq!(hf.engine(), "hf");
    let tasks = TaskResolver::new(&TaskConfig::default()).unwrap();
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: TrailingUserTurn::Trim, base: Path::new("/") };
    let mut read = ReadResult::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/data/sft")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        read_input(&input(f), &cx, &mut read).unwrap();
    }
    for tok in [&fast, &hf] {
        let (compared, truncated) = compare(&read, &golden, tok);
        assert_eq!(compared, golden.len());
        assert!(truncated > 100, "{truncated} truncation cases compared");
    }
}

/// Compares every example read with its golden entry; returns (compared, truncation cases).
fn compare(read: &ReadResult, golden: &HashMap<(String, u64), Golden>, tok: &SftTokenizer) -> (usize, usize) {
    let (mut compared, mut truncated) = (0, 0);
    for o in &read.outcomes {
        let Outcome::Example(ex) = o else { panic!("fixture record not read: {o:?}") };
        let file = Path::new(&ex.position.file).file_name().unwrap().to_string_lossy().to_string();
        let g = golden.get(&(file.clone(), ex.ordinal)).unwrap_or_else(|| panic!("{} not in golden", ex.id));
        let t = tokenize(&render(ex, DEFAULT_SYSTEM_PROMPT), tok).unwrap();
        assert_eq!(t.input_ids, g.input_ids, "{} ({}): ids differ from apply_chat_template", ex.id, tok.engine());
        assert_eq!(spans(&t.loss_mask), g.mask, "{}: mask differs from LLaMA-Factory labels", ex.id);
        assert_eq!(t.straddling, 0, "{}", ex.id);
        if let (Some(c), Some(ids), Some(mask)) = (g.cutoff, &g.trunc_ids, &g.trunc_mask) {
            let mut tt = t.clone();
            let cut = truncate(&mut tt, c);
            assert!(cut.any());
            assert_eq!(&tt.input_ids, ids, "{}: truncated ids differ", ex.id);
            assert_eq!(&spans(&tt.loss_mask), mask, "{}: truncated mask differs", ex.id);
            assert_eq!(cut.prompt_tokens + cut.answer_tokens + tt.input_ids.len(), t.input_ids.len());
            truncated += 1;
        }
        compared += 1;
    }
    (compared, truncated)
}

#[test]
fn the_inference_prompt_is_the_training_text_up_to_the_answer() {
    // Training (the SFT build's render) and inference (a conversation: system, history, the
    // last question, generation prompt) go through the one ChatML renderer: on every fixture
    // example the prompt plus the answer and its `<|im_end|>\n` is the training text, and the
    // inference tokenizer's prompt ids are the training ids up to the answer.
    let tasks = TaskResolver::new(&TaskConfig::default()).unwrap();
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: TrailingUserTurn::Trim, base: Path::new("/") };
    let mut read = ReadResult::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/data/sft")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        read_input(&input(f), &cx, &mut read).unwrap();
    }
    let sft_tok = SftTokenizer::load(&root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")).unwrap();
    let infer_tok = coretech::infer::tokenizer::bundled().unwrap();
    let mut compared = 0;
    for o in &read.outcomes {
        let Outcome::Example(ex) = o else { panic!("fixture record not read: {o:?}") };
        let train = render(ex, DEFAULT_SYSTEM_PROMPT);
        let (answer, asked) = ex.messages.split_last().unwrap();
        assert_eq!(answer.role, Role::Assistant);
        let mut msgs: Vec<Message> = ex.system.iter().map(|s| Message::new(Role::System, s.clone())).collect();
        msgs.extend(asked.iter().cloned());
        let prompt = render_chat(&msgs, DEFAULT_SYSTEM_PROMPT, true).text;
        assert_eq!(format!("{prompt}{}<|im_end|>\n", answer.content), train.text, "{}", ex.id);
        let t = tokenize(&train, &sft_tok).unwrap();
        let prompt_ids = coretech::infer::tokenizer::encode(&infer_tok, &prompt).unwrap();
        let n = prompt_ids.len();
        assert_eq!(&t.input_ids[..n], &prompt_ids[..], "{}: prompt ids are not a prefix of the training ids", ex.id);
        // The loss starts right after the prompt: the answer's first token.
        assert_eq!((t.loss_mask[n - 1], t.loss_mask[n]), (0, 1), "{}", ex.id);
        compared += 1;
    }
    assert_eq!(compared, 682);
}
