//! Property tests of packing (every token of every document exactly once, in order, with
//! correct `seg_lens`) and of the fast tokenizer against the HF path on random Unicode text.

use std::sync::OnceLock;

use coretech::pack::bestfit::{pack_examples, BestFit, Example};
use coretech::pack::CptPacker;
use coretech::shard::tokens::Row;
use coretech::tokenize::{Engine, Tokenizer};
use proptest::prelude::*;

const EOS: u32 = 1_000_000;
const PAD: u32 = 2_000_000;

fn docs_strategy() -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop::collection::vec(prop::collection::vec(0u32..50_000, 0..80), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cpt_keeps_every_token_once_in_order(docs in docs_strategy(), seq_len in 1usize..64) {
        let mut p = CptPacker::new(seq_len, EOS);
        let mut rows: Vec<Row> = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            p.push(d, &format!("s{}", i % 3), &mut rows);
        }
        rows.extend(p.finish(PAD));
        // Rows are exactly seq_len; only the last may have padding.
        for (k, r) in rows.iter().enumerate() {
            prop_assert_eq!(r.input_ids.len(), seq_len);
            prop_assert_eq!(r.seg_lens.len(), r.sources.len());
            let real = r.real_tokens();
            if k + 1 < rows.len() {
                prop_assert_eq!(real, seq_len);
            }
            prop_assert!(r.input_ids[real..].iter().all(|&t| t == PAD));
            prop_assert!(r.seg_lens.iter().all(|&l| l > 0));
        }
        // The real tokens, in order, are the documents each followed by EOS.
        let want: Vec<u32> = docs.iter().flat_map(|d| d.iter().copied().chain([EOS])).collect();
        let got: Vec<u32> = rows.iter().flat_map(|r| r.input_ids[..r.real_tokens()].iter().copied()).collect();
        prop_assert_eq!(&got, &want);
        // Segments line up with documents: consecutive segments make up each document; a
        // segment that does not finish its document ends its row.
        let mut segs = rows.iter().flat_map(|r| {
            let mut at = 0usize;
            r.seg_lens.iter().zip(&r.sources).map(move |(&l, s)| {
                at += l as usize;
                (l as usize, at == seq_len, s.clone())
            }).collect::<Vec<_>>()
        });
        for (i, d) in docs.iter().enumerate() {
            let mut left = d.len() + 1;
            while left > 0 {
                let (l, row_end, src) = segs.next().expect("a segment for every document token");
                prop_assert!(l <= left, "segment crosses a document boundary");
                prop_assert_eq!(src, format!("s{}", i % 3));
                left -= l;
                if left > 0 {
                    prop_assert!(row_end, "a split document continues only at a row boundary");
                }
            }
        }
        prop_assert!(segs.next().is_none());
    }

    #[test]
    fn best_fit_keeps_examples_whole(lens in prop::collection::vec(1usize..100, 0..60), seq_len in 1usize..48, max_open in 1usize..8, staged in any::<bool>()) {
        let examples: Vec<Example> = lens.iter().enumerate().map(|(i, &n)| Example {
            ids: (0..n as u32).map(|k| (i as u32) << 8 | (k & 0xFF)).collect(),
            loss_mask: Some((0..n).map(|k| (k % 3 != 0) as u8).collect()),
            source: format!("s{i}"),
            stage: staged.then_some((i % 3) as u32),
        }).collect();
        let mut bf = BestFit::new(seq_len, PAD, max_open, true);
        let mut rows = Vec::new();
        for e in &examples {
            bf.push(e, &mut rows);
            prop_assert!(bf.open_rows() <= max_open);
        }
        bf.finish(&mut rows);
        // Collect the pieces of each example from the rows.
        let mut pieces: Vec<Vec<(Vec<u32>, Vec<u8>)>> = vec![Vec::new(); examples.len()];
        for r in &rows {
            prop_assert_eq!(r.input_ids.len(), seq_len);
            let mask = r.loss_mask.as_ref().unwrap();
            let real = r.real_tokens();
            prop_assert!(real <= seq_len);
            prop_assert!(r.input_ids[real..].iter().all(|&t| t == PAD) && mask[real..].iter().all(|&m| m == 0));
            let mut at = 0;
            for (&l, src) in r.seg_lens.iter().zip(&r.sources) {
                let i: usize = src[1..].parse().unwrap();
                prop_assert_eq!(r.stage, examples[i].stage, "rows never mix stages");
                pieces[i].push((r.input_ids[at..at + l as usize].to_vec(), mask[at..at + l as usize].to_vec()));
                at += l as usize;
            }
        }
        for (i, e) in examples.iter().enumerate() {
            let n = e.ids.len();
            let expect_pieces = if n <= seq_len { 1 } else { n.div_ceil(seq_len) };
            prop_assert_eq!(pieces[i].len(), expect_pieces, "example {} of {} tokens", i, n);
            // Pieces are cut at multiples of seq_len and come back in order.
            let ids: Vec<u32> = pieces[i].iter().flat_map(|p| p.0.clone()).collect();
            let mask: Vec<u8> = pieces[i].iter().flat_map(|p| p.1.clone()).collect();
            prop_assert_eq!(&ids, &e.ids);
            prop_assert_eq!(&mask, e.loss_mask.as_ref().unwrap());
            for (k, p) in pieces[i].iter().enumerate() {
                if k + 1 < pieces[i].len() {
                    prop_assert_eq!(p.0.len(), seq_len);
                }
            }
        }
        // The library entry point gives the same rows.
        prop_assert_eq!(pack_examples(&examples, seq_len, PAD, max_open), rows);
    }
}

fn tokenizers() -> &'static (Tokenizer, Tokenizer) {
    static T: OnceLock<(Tokenizer, Tokenizer)> = OnceLock::new();
    T.get_or_init(|| (Tokenizer::qwen25(Engine::Fast).unwrap(), Tokenizer::qwen25(Engine::Hf).unwrap()))
}

/// Pieces that hit every branch of the pre-tokenizer, NFC and the special-token split.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<char>().prop_map(|c| c.to_string()),
        "[a-zA-Z]{1,8}",
        "[0-9]{1,4}",
        "[ \t\r\n\u{a0}\u{3000}\u{2028}\u{85}\u{b}\u{c}]{1,5}",
        "[!-/:-@\\[-`{-~，。、；：“”（）《》]{1,4}",
        "'(s|t|re|ve|m|ll|d|S|T|RE|Ve|ſ|x)",
        "[\u{4e00}-\u{9fff}]{1,12}",
        "[\u{300}-\u{36f}\u{1100}-\u{1112}\u{1161}-\u{1175}]{1,3}",
        "[\u{1f300}-\u{1faff}\u{200d}\u{fe0f}]{1,3}",
        Just("<|endoftext|>".to_string()),
        Just("<|im_start|>".to_string()),
        Just("<|im_end|>".to_string()),
        Just("<|im_".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_equals_hf_on_random_unicode(parts in prop::collection::vec(piece(), 0..24)) {
        let text: String = parts.concat();
        let (fast, hf) = tokenizers();
        prop_assert_eq!(fast.encode(&text).unwrap(), hf.encode(&text).unwrap(), "text {:?}", text);
    }

    #[test]
    fn fast_path_equals_hf_on_arbitrary_strings(text in any::<String>()) {
        let (fast, hf) = tokenizers();
        prop_assert_eq!(fast.encode(&text).unwrap(), hf.encode(&text).unwrap(), "text {:?}", text);
    }
}
