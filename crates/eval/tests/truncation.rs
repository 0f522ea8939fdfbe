//! Requests longer than the model's context are cut as lm-eval cuts them
//! (`(context + continuation)[-(max_length + 1):][:-1]`), checked against a forward of the
//! hand-cut input.

use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_eval::scoring::{encode_pair, truncate_left};
use sweelol_eval::Scorer;
use sweelol_gemma::load_pretrained;
use sweelol_train::testing;

#[test]
fn truncation_keeps_the_last_max_length_plus_one_tokens() {
    // 5 + 2 tokens, max_length 4: the last 5 stay; the context loses <bos> and one more.
    let (ctx, cont) = truncate_left(vec![2, 10, 11, 12, 13], vec![20, 21], 4).unwrap();
    assert_eq!((ctx, cont), (vec![11, 12, 13], vec![20, 21]));
    // Within the context: unchanged.
    assert_eq!(truncate_left(vec![2, 10], vec![20, 21], 4).unwrap(), (vec![2, 10], vec![20, 21]));
    // A continuation longer than the context can hold: refused, naming both numbers.
    let msg = truncate_left(vec![2], vec![1, 2, 3, 4, 5], 4).unwrap_err().to_string();
    assert!(msg.contains("5 tokens") && msg.contains("context of 4"), "{msg}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_request_past_the_context_scores_the_hand_cut_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::tiny_real_vocab_model(&dir.path().join("m")).unwrap();
    let pre = load_pretrained(path.to_str().unwrap(), &Device::flex()).unwrap();
    let context = "Question: which of these numbers is the largest one of all, counting carefully?\nAnswer:";
    let continuations = [" twelve".to_string(), " one hundred and one".to_string()];
    let max_length = 12;
    let mut scorer = Scorer::new(&pre.model, &pre.tokenizer);
    scorer.max_length = max_length;
    let ours = scorer.loglikelihoods(context, &continuations).unwrap();
    for (cont_text, ours) in continuations.iter().zip(ours) {
        let (ctx, cont) = encode_pair(&pre.tokenizer, context, cont_text).unwrap();
        assert!(ctx.len() + cont.len() > max_length + 1, "the request must be too long for the test to mean anything");
        // lm-eval: the last max_length + 1 tokens, the input all but the last of them.
        let full: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
        let kept = &full[full.len() - (max_length + 1)..];
        let input = &kept[..max_length];
        let ids: Vec<i64> = input.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, max_length]), &Device::flex());
        let hidden = pre.model.hidden_states(pre.model.embed(tokens), None);
        let positions: Vec<usize> = (max_length - cont.len()..max_length).collect();
        let logits: Vec<f32> = pre.model.logits_at(hidden, &positions).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let vocab = logits.len() / cont.len();
        let mut expected = 0.0f64;
        for (k, &target) in cont.iter().enumerate() {
            let row = &logits[k * vocab..(k + 1) * vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
            expected += row[target as usize] as f64 - log_sum;
        }
        assert!((ours - expected).abs() < 1e-3, "{cont_text:?}: ours {ours}, hand-cut {expected}");
    }
}
