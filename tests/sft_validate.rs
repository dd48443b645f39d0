//! IPC validation on the fixture answers: counts verified by hand on a few examples, and a
//! completeness check that no IPC-shaped token in any answer is missed.

use std::path::{Path, PathBuf};

use coretech::ipc::extract::extract_codes;
use coretech::ipc::{IpcConfig, IpcScheme};
use coretech::sft::config::{SftInput, TaskConfig, TrailingUserTurn};
use coretech::sft::read::{read_input, Outcome, ReadContext, ReadResult};
use coretech::sft::task::TaskResolver;
use coretech::sft::validate::{check_codes, looks_truncated, IpcLookup};
use coretech::sft::Example;

/// Every SFT fixture file; the tests that scan all answers read each of them.
const SFT_FIXTURES: [&str; 6] = [
    "GovPatent-SFT_QA_IPC.jsonl",
    "GovPatent-SFT_QA_Tech.jsonl",
    "GovPatent-SFT_raw_data.csv",
    "Paper-SFT_QA_IPC.jsonl",
    "Paper-SFT_QA_Tech.jsonl",
    "flagai_aquila_convo_samples.sharegpt.jsonl",
];

fn examples(file: &str) -> Vec<Example> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/sft").join(file);
    let tasks = TaskResolver::new(&TaskConfig::default()).unwrap();
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: TrailingUserTurn::Trim, base: Path::new("/") };
    let mut r = ReadResult::default();
    read_input(&SftInput::new(path), &cx, &mut r).unwrap();
    r.outcomes.into_iter().filter_map(|o| if let Outcome::Example(e) = o { Some(*e) } else { None }).collect()
}

#[test]
fn codes_counted_by_hand_are_all_found() {
    // GovPatent IPC, record 0 (智能芯片): 13 codes in a numbered list, 11 subclasses and two
    // main groups written without a space (G05B19/00, G11C13/00). Counted by reading the answer.
    let gov = examples("GovPatent-SFT_QA_IPC.jsonl");
    let c = check_codes(&gov[0].answer(), None);
    assert_eq!(
        c.distinct,
        ["H01L", "G06F", "G06N", "G06T", "G16B", "G16H", "G06V", "G06K", "G05B 19/00", "G11C 13/00", "H03K", "H05K", "G16C"]
    );
    assert_eq!((c.mentions.len(), c.malformed.len()), (13, 0));
    assert_eq!(c.mentions.iter().filter(|m| m.level == 4).count(), 2);
    // Paper IPC, record 0 (医疗机器人): 12 codes, six with a space before the group.
    let paper = examples("Paper-SFT_QA_IPC.jsonl");
    let c = check_codes(&paper[0].answer(), None);
    assert_eq!(
        c.distinct,
        ["A61B", "B25J", "G05B", "G05D", "A61B 34/00", "G06T", "A61G 12/00", "B25J 11/00", "A61B 17/00", "A61H 3/00", "G06N", "G06K 9/00"]
    );
    assert_eq!(c.mentions.len(), 12);
    // The tech answers mention no codes at all (their acronyms — GPU, AI, FPGA — are not codes).
    let tech = examples("GovPatent-SFT_QA_Tech.jsonl");
    assert!(tech.iter().all(|e| extract_codes(&e.answer()).is_empty()));
}

#[test]
fn codes_are_known_by_scheme_membership_titled_or_not() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The fixtures' scheme, as pipelines/sft.toml configures it.
    let cfg = IpcConfig {
        scheme: vec![
            root.join("fixtures/data/ipc/wipo_ipcr_scheme_20100101_excerpt.xml"),
            root.join("fixtures/data/ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl"),
        ],
    };
    let mut scheme = IpcScheme::load(&cfg).unwrap();
    // GovPatent IPC record 0: of its 13 codes, the 2010 WIPO excerpt and the G06/H04 CoreTech
    // titles know seven (H01L, G06F, G06N, G06T, G06K, H03K, H05K).
    let gov = examples("GovPatent-SFT_QA_IPC.jsonl");
    let answer = gov[0].answer();
    let c = check_codes(&answer, Some(&scheme as &dyn IpcLookup));
    assert_eq!(c.unknown, ["G16B", "G16H", "G06V", "G05B 19/00", "G11C 13/00", "G16C"]);
    // H01L is known from the CoreTech file alone: a Chinese title, no English one.
    assert!(IpcLookup::contains(&scheme, "H01L"));
    assert!(scheme.title("H01L", "zh").is_some() && scheme.title("H01L", "en").is_none());
    // A scheme entry with no title in either language (a CoreTech record with an empty
    // `ori_des`, hand-made here: the fixture scheme titles every entry) is still a known code.
    let tmp = tempfile::tempdir().unwrap();
    let untitled = tmp.path().join("untitled.jsonl");
    std::fs::write(&untitled, "{\"ipc\": \"G06V\", \"des\": \"\", \"ori_des\": \"\"}\n").unwrap();
    scheme.add_file(&untitled).unwrap();
    assert_eq!((scheme.title("G06V", "en"), scheme.title("G06V", "zh")), (None, None));
    let c = check_codes(&answer, Some(&scheme as &dyn IpcLookup));
    assert_eq!(c.unknown, ["G16B", "G16H", "G05B 19/00", "G11C 13/00", "G16C"]);
}

#[test]
fn no_ipc_shaped_token_in_any_answer_is_missed() {
    // Every section-letter (A–H), digit, digit, capital-letter token — the shape every IPC code
    // starts with — is either covered by a mention or glued to a longer word.
    let mut mentions = 0;
    for file in SFT_FIXTURES {
        for ex in examples(file) {
            let a = ex.answer();
            let found = extract_codes(&a);
            mentions += found.len();
            let chars: Vec<(usize, char)> = a.char_indices().collect();
            for w in 0..chars.len().saturating_sub(3) {
                let (i, c0) = chars[w];
                let shape = ('A'..='H').contains(&c0)
                    && chars[w + 1].1.is_ascii_digit()
                    && chars[w + 2].1.is_ascii_digit()
                    && chars[w + 3].1.is_ascii_uppercase();
                if !shape {
                    continue;
                }
                let glued =
                    w > 0 && chars[w - 1].1.is_ascii_alphanumeric() || chars.get(w + 4).is_some_and(|(_, c)| c.is_ascii_alphabetic());
                let covered = found.iter().any(|m| m.offset <= i && i < m.offset + m.raw.len());
                assert!(covered || glued, "{}: {:?} at byte {i} not found", ex.id, &a[i..chars.get(w + 8).map(|c| c.0).unwrap_or(a.len())]);
            }
            // Nothing in the fixtures is malformed or full-width.
            let c = check_codes(&a, None);
            assert!(c.malformed.is_empty(), "{}: {:?}", ex.id, c.malformed);
        }
    }
    assert!(mentions > 2000, "{mentions}");
}

#[test]
fn no_fixture_answer_looks_truncated() {
    for file in SFT_FIXTURES {
        for ex in examples(file) {
            for m in ex.messages.iter().filter(|m| m.role == coretech::sft::Role::Assistant) {
                assert_eq!(
                    looks_truncated(&m.content),
                    None,
                    "{}: …{}",
                    ex.id,
                    m.content.chars().rev().take(60).collect::<String>().chars().rev().collect::<String>()
                );
            }
        }
    }
}

#[test]
fn validation_and_scoring_read_the_same_codes() {
    // One extractor (coretech::ipc::extract) behind SFT validation, task inference and eval
    // scoring: on every fixture answer, the codes scoring takes at subclass depth or deeper are
    // exactly the codes validation finds written in full, in the same order.
    let mut n = 0;
    for file in SFT_FIXTURES {
        for ex in examples(file) {
            let a = ex.answer();
            let scored: Vec<String> =
                coretech::infer::score::extract_ipc_codes(&a).iter().filter(|s| s.level() >= 3).map(|s| s.to_string()).collect();
            let mut validated: Vec<String> = Vec::new();
            for m in check_codes(&a, None).mentions.iter().filter(|m| m.is_complete()) {
                let s = m.normalized.clone().unwrap();
                if !validated.contains(&s) {
                    validated.push(s);
                }
            }
            assert_eq!(scored, validated, "{}", ex.id);
            n += scored.len();
        }
    }
    assert!(n > 1500, "{n}");
}
