//! Loading, generation and the KV cache, on tiny random Qwen2 checkpoints written here.

#[path = "infer_support/mod.rs"]
mod support;

use candle_core::{DType, Tensor};
use coretech::infer::chat::ChatSession;
use coretech::infer::generate::generate;
use coretech::infer::{tokenizer, Checkpoint, DTypeChoice, GenerationConfig, InferError, LoadOptions, StopReason};
use coretech::sft::template::{render_chat, DEFAULT_SYSTEM_PROMPT};
use coretech::sft::{Message, Role};
use support::{tiny_checkpoint, Tiny};

fn load(dir: &std::path::Path) -> Checkpoint {
    Checkpoint::load(dir, &LoadOptions::default()).unwrap()
}

fn load_err(dir: &std::path::Path) -> String {
    match Checkpoint::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn chat_prompt(ckpt: &Checkpoint, question: &str) -> Vec<u32> {
    tokenizer::encode(&ckpt.tokenizer, &render_chat(&[Message::new(Role::User, question)], DEFAULT_SYSTEM_PROMPT, true).text).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: n, ..Default::default() }
}

#[test]
fn loads_with_the_bundled_tokenizer_and_chatml_stop_tokens() {
    let dir = tiny_checkpoint(&Tiny::default(), 1);
    let ckpt = load(dir.path());
    assert_eq!(ckpt.tokenizer_origin, tokenizer::BUNDLED_ORIGIN);
    assert_eq!(ckpt.stop_ids, [151643, 151645]);
    assert_eq!(ckpt.dtype, DType::F32);
    assert_eq!(ckpt.config.num_hidden_layers, 2);
}

#[test]
fn chatml_prompt_ids_match_the_golden_ids() {
    let dir = tiny_checkpoint(&Tiny::default(), 1);
    let ckpt = load(dir.path());
    let ids = chat_prompt(&ckpt, "一种基于深度学习的专利分类方法 H04L 29/06 hello world");
    // The user turn as PROVENANCE.md gives it (HF `tokenizers`), then "\n" (198).
    let user_turn = [
        151644, 872, 198, 101053, 104210, 102217, 100134, 9370, 102311, 70538, 39907, 472, 15, 19, 43, 220, 17, 24, 14, 15, 21, 23811,
        1879, 151645, 198,
    ];
    // <|im_start|>system\n … <|im_end|>\n before it; <|im_start|>assistant\n after it
    // ("system" = 8948, "assistant" = 77091 in the Qwen2.5 vocabulary).
    let mut want = vec![151644, 8948, 198];
    want.extend(tokenizer::encode(&ckpt.tokenizer, DEFAULT_SYSTEM_PROMPT).unwrap());
    want.extend([151645, 198]);
    want.extend(user_turn);
    want.extend([151644, 77091, 198]);
    assert_eq!(ids, want);
}

#[test]
fn greedy_generation_is_deterministic_and_streams_its_text() {
    let dir = tiny_checkpoint(&Tiny::default(), 2);
    let mut ckpt = load(dir.path());
    let prompt = chat_prompt(&ckpt, "智能芯片涉及的IPC分类编号有哪些？");
    let mut pieces = Vec::new();
    let a = generate(&mut ckpt, &prompt, &greedy(24), |t| {
        pieces.push(t.to_string());
        Ok(())
    })
    .unwrap();
    assert!(!a.tokens.is_empty());
    assert_eq!(pieces.concat(), a.text);
    assert_eq!(a.text, tokenizer::decode(&ckpt.tokenizer, &a.tokens).unwrap());
    assert_eq!(a.prompt_tokens, prompt.len());
    match a.stop {
        StopReason::MaxNewTokens => assert_eq!(a.tokens.len(), 24),
        StopReason::StopToken => assert!(ckpt.stop_ids.contains(&a.stop_token.unwrap())),
        StopReason::ContextFull => panic!("context is 256"),
    }
    // Same again, on the same model (cache state left by the first run) and on a fresh load.
    let b = generate(&mut ckpt, &prompt, &greedy(24), |_| Ok(())).unwrap();
    let c = generate(&mut load(dir.path()), &prompt, &greedy(24), |_| Ok(())).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn seeded_sampling_repeats_and_the_seed_matters() {
    let dir = tiny_checkpoint(&Tiny::default(), 3);
    let mut ckpt = load(dir.path());
    let prompt = chat_prompt(&ckpt, "hello");
    let cfg = |seed| GenerationConfig {
        max_new_tokens: 32,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 1000,
        repetition_penalty: 1.1,
        seed,
        ..Default::default()
    };
    let a = generate(&mut ckpt, &prompt, &cfg(7), |_| Ok(())).unwrap();
    let b = generate(&mut ckpt, &prompt, &cfg(7), |_| Ok(())).unwrap();
    let c = generate(&mut ckpt, &prompt, &cfg(8), |_| Ok(())).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_ne!(a.tokens, c.tokens);
    // Plain temperature and top-p alone are seeded too.
    for cfg in [
        GenerationConfig { max_new_tokens: 16, temperature: 0.8, seed: 5, ..Default::default() },
        GenerationConfig { max_new_tokens: 16, temperature: 0.8, top_p: 0.5, seed: 5, ..Default::default() },
    ] {
        let x = generate(&mut ckpt, &prompt, &cfg, |_| Ok(())).unwrap();
        let y = generate(&mut ckpt, &prompt, &cfg, |_| Ok(())).unwrap();
        assert_eq!(x.tokens, y.tokens);
    }
}

#[test]
fn kv_cache_logits_equal_a_full_forward_of_the_same_prefix() {
    let dir = tiny_checkpoint(&Tiny::default(), 4);
    let mut ckpt = load(dir.path());
    let mut seq = chat_prompt(&ckpt, "量子隐形传态的类别代码有哪些？");
    let (mut logits, reused) = ckpt.prefill(&seq).unwrap();
    assert_eq!(reused, 0);
    let mut stepped = vec![logits.clone()];
    for _ in 0..12 {
        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        seq.push(next);
        logits = ckpt.step(&[next]).unwrap();
        stepped.push(logits.clone());
    }
    let prompt_len = seq.len() - 12;
    let mut fresh = load(dir.path());
    for (i, cached) in stepped.iter().enumerate() {
        let full = fresh.forward_full(&seq[..prompt_len + i]).unwrap();
        let d = max_abs_diff(cached, &full);
        assert!(d < 1e-4, "step {i}: max |diff| {d}");
    }
    // The logits are not trivially equal everywhere (the check would prove nothing).
    assert!(max_abs_diff(&stepped[0], &stepped[1]) > 1e-3);
}

#[test]
fn prefill_reuses_a_cached_prefix_and_gives_the_full_forward_logits() {
    let dir = tiny_checkpoint(&Tiny::default(), 5);
    let mut ckpt = load(dir.path());
    let first = chat_prompt(&ckpt, "第一个问题");
    ckpt.prefill(&first).unwrap();
    let mut second = first.clone();
    second.extend(
        tokenizer::encode(&ckpt.tokenizer, "回答<|im_end|>\n<|im_start|>user\n第二个问题<|im_end|>\n<|im_start|>assistant\n").unwrap(),
    );
    let (reused_logits, reused) = ckpt.prefill(&second).unwrap();
    assert_eq!(reused, first.len());
    assert_eq!(ckpt.cached_tokens(), &second[..]);
    let full = load(dir.path()).forward_full(&second).unwrap();
    assert!(max_abs_diff(&reused_logits, &full) < 1e-4);
    // A prompt that diverges from the cache is recomputed.
    let (_, reused) = ckpt.prefill(&first[..first.len() - 1]).unwrap();
    assert_eq!(reused, 0);
}

#[test]
fn second_chat_turn_equals_a_fresh_model_given_the_same_history() {
    let dir = tiny_checkpoint(&Tiny::default(), 6);
    let mut ckpt = load(dir.path());
    let mut session = ChatSession::new(Some("你是专利助手。".into()), greedy(10));
    let a1 = session.ask(&mut ckpt, "什么是IPC？", |_| Ok(())).unwrap();
    let a2 = session.ask(&mut ckpt, "再说一遍", |_| Ok(())).unwrap();
    assert_eq!(session.history.len(), 4);
    assert_eq!(session.history[1], Message::new(Role::Assistant, a1.text.clone()));
    let msgs = vec![
        Message::new(Role::System, "你是专利助手。"),
        Message::new(Role::User, "什么是IPC？"),
        Message::new(Role::Assistant, a1.text.clone()),
        Message::new(Role::User, "再说一遍"),
    ];
    let mut fresh = load(dir.path());
    let ids = tokenizer::encode(&fresh.tokenizer, &render_chat(&msgs, DEFAULT_SYSTEM_PROMPT, true).text).unwrap();
    let want = generate(&mut fresh, &ids, &greedy(10), |_| Ok(())).unwrap();
    assert_eq!(a2, want);
    session.reset();
    assert!(session.history.is_empty());
}

#[test]
fn untied_single_file_and_sharded_checkpoints_agree() {
    let spec = Tiny { tie: false, ..Tiny::default() };
    let single = tiny_checkpoint(&spec, 9);
    let sharded = tempfile::tempdir().unwrap();
    spec.write_sharded(sharded.path(), 9);
    let mut a = load(single.path());
    let mut b = load(sharded.path());
    let ids = chat_prompt(&a, "hi");
    let d = max_abs_diff(&a.forward_full(&ids).unwrap(), &b.forward_full(&ids).unwrap());
    assert_eq!(d, 0.0);
    // The untied head is really used: tying it would change the logits.
    let tied = tiny_checkpoint(&Tiny::default(), 9);
    assert!(max_abs_diff(&a.forward_full(&ids).unwrap(), &load(tied.path()).forward_full(&ids).unwrap()) > 1e-3);
}

#[test]
fn half_precision_weights_load_and_generate_deterministically() {
    let spec = Tiny { dtype: DType::BF16, ..Tiny::default() };
    let dir = tiny_checkpoint(&spec, 10);
    // auto on CPU computes in f32; bf16 on request.
    assert_eq!(load(dir.path()).dtype, DType::F32);
    let mut ckpt = Checkpoint::load(dir.path(), &LoadOptions { dtype: DTypeChoice::Bf16, ..Default::default() }).unwrap();
    assert_eq!(ckpt.dtype, DType::BF16);
    let prompt = chat_prompt(&ckpt, "hello");
    let a = generate(&mut ckpt, &prompt, &greedy(8), |_| Ok(())).unwrap();
    let b = generate(&mut ckpt, &prompt, &greedy(8), |_| Ok(())).unwrap();
    assert_eq!(a, b);
    // Several new tokens after a cached prefix are recomputed in half precision.
    let mut longer = prompt.clone();
    longer.extend(&a.tokens[..a.tokens.len().min(3)]);
    ckpt.forward_full(&prompt).unwrap();
    let (_, reused) = ckpt.prefill(&longer).unwrap();
    assert_eq!(reused, if longer.len() - prompt.len() == 1 { prompt.len() } else { 0 });
}

#[test]
fn generation_stops_at_the_context_length() {
    let spec = Tiny { max_pos: 64, ..Tiny::default() };
    let dir = tiny_checkpoint(&spec, 11);
    let mut ckpt = load(dir.path());
    let prompt = chat_prompt(&ckpt, "hi");
    let g = generate(&mut ckpt, &prompt, &greedy(1000), |_| Ok(())).unwrap();
    if g.stop == StopReason::ContextFull {
        assert_eq!(prompt.len() + g.tokens.len(), 65);
    } else {
        assert_eq!(g.stop, StopReason::StopToken);
    }
    let long: Vec<u32> = std::iter::repeat_n(prompt.clone(), 3).flatten().collect();
    let err = generate(&mut ckpt, &long, &greedy(4), |_| Ok(())).unwrap_err();
    assert!(matches!(err, InferError::PromptTooLong { context: 64, .. }), "{err}");
}

#[test]
fn bad_generation_settings_are_refused() {
    let dir = tiny_checkpoint(&Tiny::default(), 12);
    let mut ckpt = load(dir.path());
    let prompt = chat_prompt(&ckpt, "hi");
    for (cfg, key) in [
        (GenerationConfig { max_new_tokens: 0, ..Default::default() }, "max-new-tokens"),
        (GenerationConfig { temperature: -1.0, ..Default::default() }, "temperature"),
        (GenerationConfig { top_p: 0.0, ..Default::default() }, "top-p"),
        (GenerationConfig { top_p: 1.5, ..Default::default() }, "top-p"),
        (GenerationConfig { repetition_penalty: 0.0, ..Default::default() }, "repetition-penalty"),
    ] {
        let err = generate(&mut ckpt, &prompt, &cfg, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    assert!(generate(&mut ckpt, &[], &greedy(1), |_| Ok(())).unwrap_err().to_string().contains("prompt"));
}

#[test]
fn broken_checkpoints_say_what_is_wrong() {
    let spec = Tiny::default();
    type Breaker = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("config.json", Box::new(|d| std::fs::remove_file(d.join("config.json")).unwrap())),
        ("config.json: EOF while parsing", Box::new(|d| std::fs::write(d.join("config.json"), "{\"hidden_size\": ").unwrap())),
        ("does not name Qwen2ForCausalLM", Box::new(|d| edit_config(d, "architectures", serde_json::json!(["LlamaForCausalLM"])))),
        ("not a multiple of num_key_value_heads", Box::new(|d| edit_config(d, "num_key_value_heads", serde_json::json!(3)))),
        ("use_sliding_window = true is not supported", Box::new(|d| edit_config(d, "use_sliding_window", serde_json::json!(true)))),
        ("rope_scaling is not supported", Box::new(|d| edit_config(d, "rope_scaling", serde_json::json!({"type": "yarn", "factor": 4.0})))),
        ("unsupported torch_dtype", Box::new(|d| edit_config(d, "torch_dtype", serde_json::json!("int8")))),
        ("missing field `vocab_size`", Box::new(|d| remove_config(d, "vocab_size"))),
        ("but the model's vocab_size is 1000", Box::new(|d| edit_config(d, "vocab_size", serde_json::json!(1000)))),
        ("neither model.safetensors nor", Box::new(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap())),
        (
            "tie_word_embeddings is false but there is no lm_head.weight",
            Box::new(|d| edit_config(d, "tie_word_embeddings", serde_json::json!(false))),
        ),
        ("shape mismatch", Box::new(|d| edit_config(d, "intermediate_size", serde_json::json!(48)))),
        ("tokenizer.json", Box::new(|d| std::fs::write(d.join("tokenizer.json"), "[]").unwrap())),
    ];
    for (want, breaker) in cases {
        let dir = tiny_checkpoint(&spec, 13);
        breaker(dir.path());
        let err = load_err(dir.path());
        assert!(err.contains(want), "want {want:?}, got {err}");
    }
}

#[test]
fn missing_tensors_and_shards_and_untied_heads_are_named() {
    let spec = Tiny::default();
    // A tensor missing from the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&spec.config_json()).unwrap()).unwrap();
    let mut t = spec.tensors(14);
    t.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");

    // A shard the index lists but that is not there.
    let dir = tempfile::tempdir().unwrap();
    spec.write_sharded(dir.path(), 14);
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors.index.json") && err.contains("model-00002-of-00002.safetensors"), "{err}");

    // Tied in the config, but a different lm_head in the file: transformers and candle would disagree.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&spec.config_json()).unwrap()).unwrap();
    let mut t = spec.tensors(14);
    t.insert("lm_head.weight".into(), Tiny { tie: false, ..spec.clone() }.tensors(15).remove("lm_head.weight").unwrap());
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("lm_head.weight differs from the embedding"), "{err}");

    // Tied with an identical lm_head copy is fine.
    let mut t = spec.tensors(14);
    let emb = t["model.embed_tokens.weight"].clone();
    t.insert("lm_head.weight".into(), emb);
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    load(dir.path());
}

fn edit_config(dir: &std::path::Path, key: &str, value: serde_json::Value) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn remove_config(dir: &std::path::Path, key: &str) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove(key);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn own_tokenizer_json_is_preferred() {
    let dir = tiny_checkpoint(&Tiny::default(), 16);
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer::bundled_qwen25_tokenizer_json().unwrap()).unwrap();
    let ckpt = load(dir.path());
    assert!(ckpt.tokenizer_origin.ends_with("tokenizer.json"), "{}", ckpt.tokenizer_origin);
}

#[test]
fn generation_config_eos_ids_stop_generation() {
    let dir = tiny_checkpoint(&Tiny::default(), 17);
    std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [151645, 151643, 42]}"#).unwrap();
    let ckpt = load(dir.path());
    assert_eq!(ckpt.stop_ids, [42, 151643, 151645]);
    std::fs::write(dir.path().join("generation_config.json"), "{").unwrap();
    assert!(load_err(dir.path()).contains("generation_config.json"));
}
