//! Which weights to prune, computed on host copies of the weights in the HF `[out, in]`
//! layout (so positions mean what they mean in PyTorch's `weight.view(-1)`).
//!
//! Importance is |w|; `true` in a returned mask means *pruned*. Ties are broken by
//! position, earliest first (flat HF index; in global mode, tensors in model order), so a
//! mask never depends on sort internals. That matters in practice: the real model comes
//! from a 4-bit GGUF, whose weights take few distinct values. `torch.topk` leaves this
//! order unspecified; every other choice matches torch's pruning utilities.
//!
//! Selection is O(n) (`select_nth_unstable` for the threshold, then one ordered pass), so a
//! global threshold over all ~100M projection weights of Gemma-3-270m costs about a second.

use std::cmp::Ordering;

/// Weights to prune out of `numel` for `sparsity`: Python's `round(sparsity * numel)`
/// (half to even), which is what `torch.nn.utils.prune` computes.
pub fn num_to_prune(sparsity: f64, numel: usize) -> usize {
    ((sparsity * numel as f64).round_ties_even() as usize).min(numel)
}

/// Prunes the `k` smallest |w| over the concatenation of `tensors`: one threshold for all
/// of them (per-tensor pruning calls this with one tensor). Returns one mask per tensor.
pub fn prune_smallest(tensors: &[&[f32]], k: usize) -> Vec<Vec<bool>> {
    let total: usize = tensors.iter().map(|t| t.len()).sum();
    assert!(k <= total, "cannot prune {k} of {total} weights");
    if k == 0 {
        return tensors.iter().map(|t| vec![false; t.len()]).collect();
    }
    // The k-th smallest |w| is the threshold: everything below it goes, and of the values
    // equal to it, the first `k - below` in order.
    let threshold = {
        let mut scratch: Vec<f32> = tensors.iter().flat_map(|t| t.iter().map(|x| x.abs())).collect();
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, f32::total_cmp);
        *kth
    };
    let below: usize = tensors
        .iter()
        .map(|t| t.iter().filter(|x| x.abs().total_cmp(&threshold) == Ordering::Less).count())
        .sum();
    let mut equal_left = k - below;
    tensors
        .iter()
        .map(|t| {
            t.iter()
                .map(|x| match x.abs().total_cmp(&threshold) {
                    Ordering::Less => true,
                    Ordering::Equal if equal_left > 0 => {
                        equal_left -= 1;
                        true
                    }
                    _ => false,
                })
                .collect()
        })
        .collect()
}

/// N:M pruning of a row-major `[rows, cols]` tensor: in each group of `m` consecutive
/// entries of a row, the `m - n` smallest |w| are pruned (ties: earlier entries first).
/// `cols` must be a multiple of `m`.
pub fn prune_n_m(values: &[f32], rows: usize, cols: usize, n: usize, m: usize) -> Vec<bool> {
    assert_eq!(values.len(), rows * cols, "values do not match [{rows}, {cols}]");
    assert!(m > 0 && n <= m && cols / m * m == cols, "bad N:M {n}:{m} for {cols} columns");
    let mut pruned = vec![false; values.len()];
    let mut order: Vec<usize> = Vec::with_capacity(m);
    for (g, group) in values.chunks_exact(m).enumerate() {
        order.clear();
        order.extend(0..m);
        // Stable sort: equal magnitudes stay in position order.
        order.sort_by(|&a, &b| group[a].abs().total_cmp(&group[b].abs()));
        for &j in &order[..m - n] {
            pruned[g * m + j] = true;
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even_like_python() {
        // Python: round(2.5) == 2, round(3.5) == 4, round(0.5 * 7) == 4 (3.5).
        assert_eq!(num_to_prune(0.5, 5), 2);
        assert_eq!(num_to_prune(0.5, 7), 4);
        assert_eq!(num_to_prune(0.25, 10), 2);
        assert_eq!(num_to_prune(0.3, 10), 3);
        assert_eq!(num_to_prune(1.0, 10), 10);
    }

    #[test]
    fn ties_are_pruned_in_position_order() {
        // |w|: 1, 2, 1, 2, 1, 3 -> k = 4 prunes the three 1s, then the first 2 (index 1).
        let w = [1.0, -2.0, -1.0, 2.0, 1.0, 3.0];
        let m = prune_smallest(&[&w], 4);
        assert_eq!(m[0], vec![true, true, true, false, true, false]);
        // Across tensors (global), position order continues into the next tensor.
        let (a, b) = ([5.0, 2.0], [2.0, 2.0, 0.5]);
        let m = prune_smallest(&[&a, &b], 3);
        assert_eq!(m, vec![vec![false, true], vec![true, false, true]]);
    }

    #[test]
    fn n_m_ties_prune_earlier_entries() {
        let w = [1.0, 1.0, 1.0, 1.0, 4.0, -3.0, 0.0, 2.0];
        assert_eq!(prune_n_m(&w, 1, 8, 2, 4), vec![true, true, false, false, false, false, true, true]);
    }
}
