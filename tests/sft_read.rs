//! Reading SFT inputs: the fixture files as LLaMA-Factory reads them, inconsistent task keys,
//! `dataset_info.json` mappings, and every error path a user can hit (with file and line).

use std::path::{Path, PathBuf};

use coretech::config::PipelineConfig;
use coretech::error::Error;
use coretech::io::Encoding;
use coretech::sft::config::{SftInput, TaskConfig, TrailingUserTurn};
use coretech::sft::read::{read_input, Outcome, ReadContext, ReadResult};
use coretech::sft::task::TaskResolver;
use coretech::sft::{Example, Role};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn input(path: PathBuf) -> SftInput {
    SftInput::new(path)
}

fn read_with(inp: &SftInput, trailing: TrailingUserTurn) -> Result<ReadResult, Error> {
    let tasks = TaskResolver::new(&TaskConfig::default()).unwrap();
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: trailing, base: Path::new("/") };
    let mut out = ReadResult::default();
    read_input(inp, &cx, &mut out)?;
    Ok(out)
}

fn read(path: PathBuf) -> ReadResult {
    read_with(&input(path), TrailingUserTurn::Trim).unwrap()
}

fn examples(r: &ReadResult) -> Vec<&Example> {
    r.outcomes.iter().filter_map(|o| if let Outcome::Example(e) = o { Some(&**e) } else { None }).collect()
}

/// (line, kind, message) of every error.
fn errors(r: &ReadResult) -> Vec<(u64, String, String)> {
    r.outcomes
        .iter()
        .filter_map(|o| {
            if let Outcome::Error { err, .. } = o {
                Some((err.position.line.unwrap_or(0), err.kind.to_string(), err.message.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn sft(name: &str) -> PathBuf {
    root().join("fixtures/data/sft").join(name)
}

fn bad(name: &str) -> PathBuf {
    root().join("fixtures/bad").join(name)
}

#[test]
fn fixture_files_read_completely_with_task_keys_counted() {
    for (file, n, present, absent) in [
        ("GovPatent-SFT_QA_IPC.jsonl", 168, 70, 98),
        ("GovPatent-SFT_QA_Tech.jsonl", 130, 130, 0),
        ("Paper-SFT_QA_IPC.jsonl", 137, 0, 137),
        ("Paper-SFT_QA_Tech.jsonl", 139, 139, 0),
        ("GovPatent-SFT_raw_data.csv", 8, 0, 8),
    ] {
        let r = read(sft(file));
        assert_eq!((examples(&r).len(), errors(&r).len()), (n, 0), "{file}");
        let info = r.datasets.values().next().unwrap();
        assert_eq!((info.formatting.as_str(), info.task_key_present, info.task_key_absent), ("alpaca", present, absent), "{file}");
    }
    // Paper-SFT_QA_IPC has no final newline: its last record is still read, with its line.
    let r = read(sft("Paper-SFT_QA_IPC.jsonl"));
    assert_eq!(examples(&r).last().unwrap().position.line, Some(137));
}

#[test]
fn task_inference_agrees_with_every_given_task() {
    let tasks = TaskResolver::new(&TaskConfig::default()).unwrap();
    let mut checked = 0;
    for file in ["GovPatent-SFT_QA_IPC.jsonl", "GovPatent-SFT_QA_Tech.jsonl", "Paper-SFT_QA_IPC.jsonl", "Paper-SFT_QA_Tech.jsonl"] {
        let want = if file.contains("IPC") { "ipc" } else { "tech" };
        for ex in examples(&read(sft(file))) {
            // Given or not, the canonical task is the file's; and inference alone agrees.
            assert_eq!(ex.task, want, "{}", ex.id);
            assert_eq!(tasks.infer(&ex.question(), &ex.answer()), want, "{}: {}", ex.id, ex.question());
            checked += 1;
        }
    }
    assert_eq!(checked, 574);
    // task_type values are mapped through the aliases: key_tech → tech, IPC → ipc.
    let r = read(sft("Paper-SFT_QA_Tech.jsonl"));
    assert!(examples(&r).iter().all(|e| e.task_from == "given"));
    let r = read(sft("GovPatent-SFT_QA_IPC.jsonl"));
    let from: Vec<&str> = examples(&r).iter().map(|e| e.task_from.as_str()).collect();
    assert_eq!((from.iter().filter(|f| **f == "given").count(), from.iter().filter(|f| **f == "inferred").count()), (70, 98));
}

#[test]
fn sharegpt_fixture_trims_trailing_user_turns_or_drops_them() {
    let r = read(sft("flagai_aquila_convo_samples.sharegpt.jsonl"));
    let ex = examples(&r);
    assert_eq!(ex.len(), 100);
    let info = &r.datasets["flagai_aquila_convo_samples"];
    assert_eq!((info.formatting.as_str(), info.trimmed_trailing_user_turn), ("sharegpt", 80));
    for e in &ex {
        assert_eq!(e.messages.last().unwrap().role, Role::Assistant);
        assert!(e.messages.iter().enumerate().all(|(i, m)| (m.role == Role::User) == (i % 2 == 0)));
    }
    // The first conversation has 6 exchanges.
    assert_eq!(ex[0].turns(), 6);
    // LLaMA-Factory's behaviour on request: such conversations are dropped.
    let r = read_with(&input(sft("flagai_aquila_convo_samples.sharegpt.jsonl")), TrailingUserTurn::Drop).unwrap();
    assert_eq!(examples(&r).len(), 20);
    assert_eq!(r.outcomes.iter().filter(|o| matches!(o, Outcome::Filtered { reason: "trailing-user-turn", .. })).count(), 80);
}

#[test]
fn csv_multiline_quoted_answers_are_whole() {
    let r = read(sft("GovPatent-SFT_raw_data.csv"));
    let ex = examples(&r);
    assert_eq!(ex[0].question(), "人工智能相关关键技术及其分类号");
    let a = ex[0].answer();
    assert!(a.starts_with("1.人工智能硬件平台\n1.智能芯片\n"), "{a:.40}");
    assert!(a.lines().count() > 40);
    // Each record keeps the line it starts on.
    assert_eq!(ex[0].position.line, Some(2));
    assert!(ex[1].position.line.unwrap() > 40);
}

#[test]
fn bad_json_line_is_an_error_with_its_line_and_the_rest_is_read() {
    let r = read(bad("sft-bad-json-line.jsonl"));
    assert_eq!(examples(&r).len(), 2);
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1.as_str()), (2, "json"));
    assert!(e[0].2.contains("EOF"), "{}", e[0].2);
    let Outcome::Error { err, .. } = &r.outcomes[1] else { panic!() };
    assert!(err.to_string().contains("sft-bad-json-line.jsonl:2"), "{err}");
}

#[test]
fn wrong_shapes_are_errors() {
    let r = read(bad("sft-wrong-shape.jsonl"));
    let e = errors(&r);
    assert_eq!(e.iter().map(|(l, k, _)| (*l, k.as_str())).collect::<Vec<_>>(), [(1, "shape"), (2, "shape"), (3, "shape")]);
    assert!(e[0].2.contains("expected a JSON object"), "{}", e[0].2);
    assert!(e[1].2.contains("\"instruction\" must be a string"), "{}", e[1].2);
    assert!(e[2].2.contains("[question, answer] pair"), "{}", e[2].2);
    assert_eq!(examples(&r).len(), 1);
}

#[test]
fn missing_instruction_or_output_is_an_error() {
    let r = read(bad("sft-missing-fields.jsonl"));
    let e = errors(&r);
    assert_eq!(
        e.iter().map(|(l, k, _)| (*l, k.as_str())).collect::<Vec<_>>(),
        [(1, "missing-field"), (2, "missing-field"), (3, "missing-field")]
    );
    assert!(e[0].2.contains("\"instruction\""), "{}", e[0].2);
    assert!(e[1].2.contains("\"output\"") && e[2].2.contains("\"output\""));
    assert_eq!(examples(&r).len(), 1);
}

#[test]
fn sharegpt_turn_errors() {
    let r = read(bad("sft-sharegpt-bad-turns.jsonl"));
    let e = errors(&r);
    let kinds: Vec<(u64, &str)> = e.iter().map(|(l, k, _)| (*l, k.as_str())).collect();
    assert_eq!(kinds, [(1, "shape"), (2, "unsupported"), (3, "shape"), (4, "shape"), (5, "missing-field")]);
    assert!(e[0].2.contains("turns must alternate"), "{}", e[0].2);
    assert!(e[2].2.contains("unknown role \"robot\""), "{}", e[2].2);
    // The leading system turn becomes the system prompt.
    let ex = examples(&r);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].system.as_deref(), ex[0].messages.len()), (Some("Be brief."), 2));
}

#[test]
fn broken_json_array_keeps_the_records_before_the_damage_and_a_top_level_object_is_a_file_error() {
    // The second element lacks its closing brace. The array is framed as it streams (as the
    // corpus readers frame it): the record before the damage is kept (the whole file used to be
    // one error), the damaged element is a `json` error where parsing stopped (line 4), and the
    // array is left unclosed (`truncated` at the end of the file).
    let r = read(bad("sft-broken-array.json"));
    let e = errors(&r);
    assert_eq!(e.iter().map(|(l, k, _)| (*l, k.as_str())).collect::<Vec<_>>(), [(4, "json"), (6, "truncated")]);
    assert!(e[0].2.contains("expected `,` or `}`"), "{}", e[0].2);
    let ex = examples(&r);
    assert_eq!(ex.iter().map(|e| e.position.line).collect::<Vec<_>>(), [Some(2)]);
    assert_eq!(ex[0].question(), "第一个问题？");
    let r = read(bad("sft-top-level-object.json"));
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1.as_str()), (1, "shape"));
    assert!(e[0].2.contains("expected a JSON array of records or JSONL"), "{}", e[0].2);
}

/// (question, answer, line) of every example.
fn qa_lines(r: &ReadResult) -> Vec<(String, String, Option<u64>)> {
    examples(r).iter().map(|e| (e.question(), e.answer(), e.position.line)).collect()
}

#[test]
fn gbk_crlf_csv_reads_every_record_with_its_line() {
    // The GovPatent table as published upstream: GBK with CRLF line ends, made here from the
    // UTF-8/LF fixture. Every record is kept with the same text (CRLF inside quoted answers
    // reads as LF) and the same line; a bad row added at the end is named at its own line.
    let utf8 = std::fs::read_to_string(sft("GovPatent-SFT_raw_data.csv")).unwrap();
    let want = qa_lines(&read(sft("GovPatent-SFT_raw_data.csv")));
    assert_eq!(want.len(), 8);
    let crlf = utf8.replace('\n', "\r\n") + "一个没有答案的问题\r\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&crlf);
    assert!(!unmappable, "the fixture table is GBK-encodable");
    assert!(std::str::from_utf8(&gbk).is_err(), "the bytes are not UTF-8");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("govpatent-gbk.csv");
    std::fs::write(&p, &gbk).unwrap();
    let last_line = crlf.matches('\n').count() as u64;
    for enc in [Encoding::Auto, Encoding::Gb18030] {
        let r = read_with(&SftInput { encoding: enc, ..input(p.clone()) }, TrailingUserTurn::Trim).unwrap();
        assert_eq!(qa_lines(&r), want, "{enc:?}");
        let e = errors(&r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].0, e[0].1.as_str()), (last_line, "csv"));
        assert!(e[0].2.contains("record has 1 fields, the header has 2"), "{}", e[0].2);
    }
    // Forced UTF-8: each record is an `encoding` error at its own line, none is read.
    let r = read_with(&SftInput { encoding: Encoding::Utf8, ..input(p) }, TrailingUserTurn::Trim).unwrap();
    assert!(examples(&r).is_empty());
    let e = errors(&r);
    assert!(e.iter().all(|(_, k, _)| k == "encoding"), "{e:?}");
    assert_eq!(e.iter().map(|(l, _, _)| Some(*l)).take(8).collect::<Vec<_>>(), want.iter().map(|w| w.2).collect::<Vec<_>>());
}

#[test]
fn a_cut_json_array_keeps_every_record_before_the_cut() {
    // The Paper IPC fixture as a JSON array (one record per line), cut inside record 101.
    let lines: Vec<String> = std::fs::read_to_string(sft("Paper-SFT_QA_IPC.jsonl")).unwrap().lines().map(str::to_string).collect();
    let array = format!("[\n{}\n]\n", lines.join(",\n"));
    let cut_at = array.match_indices('\n').nth(100).unwrap().0 + 30;
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("paper.json");
    std::fs::write(&whole, &array).unwrap();
    let full = qa_lines(&read(whole));
    assert_eq!(full.len(), 137);
    let cut = dir.path().join("paper-cut.json");
    std::fs::write(&cut, &array.as_bytes()[..cut_at]).unwrap();
    let r = read(cut);
    assert_eq!(qa_lines(&r), full[..100]);
    let e = errors(&r);
    assert_eq!(e.iter().map(|(l, k, _)| (*l, k.as_str())).collect::<Vec<_>>(), [(102, "truncated")]);
}

#[test]
fn gzip_and_utf16_inputs_read_like_the_plain_file() {
    use std::io::Write;
    let plain = sft("GovPatent-SFT_QA_IPC.jsonl");
    let bytes = std::fs::read(&plain).unwrap();
    let want = read(plain);
    let ids = |r: &ReadResult| examples(r).iter().map(|e| (e.id.clone(), e.task.clone())).collect::<Vec<_>>();
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("GovPatent-SFT_QA_IPC.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let r = read(gz);
    assert_eq!((qa_lines(&r), ids(&r)), (qa_lines(&want), ids(&want)));
    assert!(errors(&r).is_empty());
    // UTF-16 with a byte-order mark, both byte orders (CRLF line ends too).
    let text = String::from_utf8(bytes).unwrap().replace('\n', "\r\n");
    for (bom, be) in [([0xff, 0xfe], false), ([0xfe, 0xff], true)] {
        let mut utf16 = bom.to_vec();
        utf16.extend(text.encode_utf16().flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() }));
        let p = dir.path().join("GovPatent-SFT_QA_IPC.jsonl");
        std::fs::write(&p, &utf16).unwrap();
        let r = read(p);
        assert_eq!((qa_lines(&r), ids(&r)), (qa_lines(&want), ids(&want)), "big-endian: {be}");
        assert!(errors(&r).is_empty());
    }
}

#[test]
fn nul_in_a_csv_cell_is_a_counted_error_at_its_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.csv");
    std::fs::write(&p, "question,answer\n问题一,回答一\n问题二,\"回答\n\0二\"\n问题三,回答三\n").unwrap();
    let r = read(p);
    assert_eq!(examples(&r).iter().map(|e| e.question()).collect::<Vec<_>>(), ["问题一", "问题三"]);
    let Some(Outcome::Error { err, .. }) = r.outcomes.iter().find(|o| matches!(o, Outcome::Error { .. })) else { panic!() };
    assert_eq!((err.kind.to_string().as_str(), err.position.line), ("encoding", Some(4)));
    assert_eq!(err.position.offset, Some("question,answer\n问题一,回答一\n问题二,\"回答\n".len() as u64));
    assert!(err.message.contains("NUL"), "{err}");
}

#[test]
fn an_input_encoding_is_checked_when_the_config_is_parsed() {
    let ok = "stages = [\"sft\"]\n[sft]\noutput = \"o\"\n[[sft.inputs]]\npath = \"t.csv\"\nencoding = \"gb18030\"\n";
    let cfg = PipelineConfig::parse(ok, "p.toml").unwrap();
    assert_eq!(cfg.sft.unwrap().inputs[0].encoding, Encoding::Gb18030);
    let e = PipelineConfig::parse(&ok.replace("gb18030", "latin1"), "p.toml").unwrap_err().to_string();
    assert!(e.contains("p.toml") && e.contains("encoding") && e.contains("gb18030") && e.contains("utf8"), "{e}");
}

#[test]
fn json_array_records_keep_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.json");
    std::fs::write(&p, "[\n  {\"instruction\": \"问题一？\", \"input\": \"\", \"output\": \"回答一。\"},\n\n  {\"instruction\": \"问题二？\", \"input\": \"补充\", \"output\": \"回答二。\", \"system\": \"你是专利助手。\"}\n]\n").unwrap();
    let r = read(p);
    let ex = examples(&r);
    assert_eq!(ex.iter().map(|e| e.position.line.unwrap()).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(ex[1].question(), "问题二？\n补充");
    assert_eq!(ex[1].system.as_deref(), Some("你是专利助手。"));
}

#[test]
fn csv_with_an_unclosed_quote_names_the_record() {
    let r = read(bad("sft-unclosed-quote.csv"));
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1.as_str()), (4, "csv"));
    assert!(e[0].2.contains("unclosed quoted field"), "{}", e[0].2);
    assert_eq!(examples(&r).len(), 1);
}

#[test]
fn dataset_info_unknown_column_is_a_config_error() {
    let err = read_with(&input(bad("sft-dataset-info-unknown-column")), TrailingUserTurn::Trim).unwrap_err().to_string();
    assert!(
        err.contains("dataset_info.json") && err.contains("patent_qa.columns.answer") && err.contains("unknown column mapping"),
        "{err}"
    );
}

#[test]
fn dataset_info_maps_columns_and_tags_like_llamafactory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("qa.jsonl"),
        "{\"q\": \"智能芯片涉及的IPC分类号有哪些？\", \"a\": \"H01L。\", \"sys\": \"你是专利助手。\", \"instruction\": \"ignored\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("chat.json"), r#"[{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]"#).unwrap();
    let info = serde_json::json!({
        "qa": {"file_name": "qa.jsonl", "columns": {"prompt": "q", "query": null, "response": "a", "system": "sys"}},
        "chat": {"file_name": "chat.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}},
        "govpatent": {"file_name": sft("GovPatent-SFT_QA_IPC.jsonl").to_string_lossy(), "split": "train"}
    });
    std::fs::write(dir.path().join("dataset_info.json"), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    let r = read(dir.path().to_path_buf());
    let ex = examples(&r);
    assert_eq!(ex.len(), 2 + 168);
    let qa: Vec<&&Example> = ex.iter().filter(|e| e.dataset == "qa").collect();
    assert_eq!(
        (qa[0].question(), qa[0].answer(), qa[0].system.as_deref()),
        ("智能芯片涉及的IPC分类号有哪些？".into(), "H01L。".into(), Some("你是专利助手。"))
    );
    let chat: Vec<&&Example> = ex.iter().filter(|e| e.dataset == "chat").collect();
    assert_eq!((chat[0].system.as_deref(), chat[0].messages.len()), (Some("S"), 2));
    assert_eq!(r.datasets["govpatent"].task_key_absent, 98);
    // Selecting entries, and naming one that does not exist.
    let mut sel = input(dir.path().to_path_buf());
    sel.datasets = vec!["chat".into()];
    assert_eq!(examples(&read_with(&sel, TrailingUserTurn::Trim).unwrap()).len(), 1);
    sel.datasets = vec!["nope".into()];
    let e = read_with(&sel, TrailingUserTurn::Trim).unwrap_err().to_string();
    assert!(e.contains("undefined dataset \"nope\""), "{e}");
}

#[test]
fn dataset_info_unsupported_features_are_config_errors() {
    for (entry, key) in [
        (serde_json::json!({"hf_hub_url": "org/ds"}), "x.hf_hub_url"),
        (serde_json::json!({"file_name": "d.json", "ranking": true}), "x.ranking"),
        (serde_json::json!({"file_name": "d.json", "columns": {"images": "imgs"}}), "x.columns.images"),
        (serde_json::json!({"file_name": "d.json", "formatting": "sharegpt", "tags": {"speaker_tag": "who"}}), "x.tags.speaker_tag"),
        (serde_json::json!({"file_name": "d.json", "formatting": "openai"}), "x.formatting"),
        (serde_json::json!({"file_name": "missing.json"}), "x.file_name"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.json"), "[]").unwrap();
        std::fs::write(dir.path().join("dataset_info.json"), serde_json::to_vec(&serde_json::json!({ "x": entry })).unwrap()).unwrap();
        let e = read(dir.path().join("d.json"));
        assert!(examples(&e).is_empty());
        let err = read_with(&input(dir.path().to_path_buf()), TrailingUserTurn::Trim).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}
