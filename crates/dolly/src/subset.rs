use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::DollyError;
use crate::load::{DollyRecord, CATEGORIES};

/// Which records to draw; see [`subset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetSpec {
    pub seed: u64,
    /// How many records; `None` keeps all (after the category filter), shuffled.
    pub n: Option<usize>,
    /// Allocate `n` across categories in proportion to their sizes (largest-remainder rounding).
    pub stratify: bool,
    /// Keep only these categories; `None` keeps all eight.
    pub categories: Option<Vec<String>>,
}

/// How large the evaluation part of [`train_eval_split`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalSize {
    /// A fraction in `[0, 1]` of the records, rounded to the nearest count.
    Fraction(f64),
    /// An exact count.
    Count(usize),
}

/// Record indices in a canonical content order.
///
/// Shuffling starts from content order rather than file order so that a subset depends only on
/// the multiset of records: 319 row positions of the shared Dolly file may differ from the hub's
/// file (see PROVENANCE.md), and this way they cannot change which records are drawn.
fn canonical_order(records: &[DollyRecord], keep: impl Fn(&DollyRecord) -> bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..records.len()).filter(|&i| keep(&records[i])).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (&records[a], &records[b]);
        (&x.category, &x.instruction, &x.context, &x.response).cmp(&(
            &y.category,
            &y.instruction,
            &y.context,
            &y.response,
        ))
    });
    idx
}

/// Largest-remainder (Hamilton) allocation of `n` over `sizes`; ties go to the earlier key.
fn proportional_quotas(sizes: &BTreeMap<&str, usize>, n: usize) -> BTreeMap<String, usize> {
    let total: u128 = sizes.values().map(|&s| s as u128).sum();
    let mut quotas = BTreeMap::new();
    if total == 0 {
        return quotas;
    }
    let mut remainders = Vec::new();
    let mut assigned = 0;
    for (&cat, &size) in sizes {
        let share = n as u128 * size as u128;
        let q = (share / total) as usize;
        assigned += q;
        quotas.insert(cat.to_owned(), q);
        remainders.push((share % total, cat));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    for (_, cat) in remainders.into_iter().take(n - assigned) {
        *quotas.get_mut(cat).expect("category present") += 1;
    }
    quotas
}

/// A deterministic subset: the same records, spec and rand version always give the same output.
///
/// Records are filtered by category, put in canonical content order, then shuffled with
/// `StdRng::seed_from_u64(seed)`. Without `stratify` the first `n` are taken. With `stratify` each
/// category (in name order) is shuffled and contributes its proportional quota, and the union is
/// shuffled again so categories are interleaved. The output is in shuffled order.
///
/// Errors: an unknown category name in the filter, or `n` larger than the filtered pool.
pub fn subset(records: &[DollyRecord], spec: &SubsetSpec) -> Result<Vec<DollyRecord>, DollyError> {
    if let Some(cats) = &spec.categories {
        // Dolly's eight, or for other data the categories its records name.
        let known: std::collections::BTreeSet<&str> = CATEGORIES.iter().copied().chain(records.iter().map(|r| r.category.as_str())).collect();
        if let Some(bad) = cats.iter().find(|c| !known.contains(c.as_str())) {
            let names: Vec<&str> = known.into_iter().filter(|c| !c.is_empty()).collect();
            return Err(DollyError::Config(format!(
                "subset: unknown category {bad:?} (expected one of {})",
                names.join(", ")
            )));
        }
    }
    let keep = |r: &DollyRecord| {
        spec.categories
            .as_ref()
            .is_none_or(|cats| cats.contains(&r.category))
    };
    let pool = canonical_order(records, keep);
    let n = spec.n.unwrap_or(pool.len());
    if n > pool.len() {
        return Err(DollyError::Config(format!(
            "subset: n = {n} but only {} records match the category filter",
            pool.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let chosen: Vec<usize> = if spec.stratify {
        let mut by_cat: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &pool {
            by_cat
                .entry(records[i].category.as_str())
                .or_default()
                .push(i);
        }
        let sizes = by_cat.iter().map(|(&c, v)| (c, v.len())).collect();
        let quotas = proportional_quotas(&sizes, n);
        let mut chosen = Vec::with_capacity(n);
        for (cat, mut members) in by_cat {
            members.shuffle(&mut rng);
            chosen.extend_from_slice(&members[..quotas[cat]]);
        }
        chosen.shuffle(&mut rng);
        chosen
    } else {
        let mut pool = pool;
        pool.shuffle(&mut rng);
        pool.truncate(n);
        pool
    };
    Ok(chosen.into_iter().map(|i| records[i].clone()).collect())
}

/// Splits into `(train, eval)`, disjoint and together all records, both in shuffled order.
///
/// Like [`subset`], the shuffle starts from canonical content order, so the split does not
/// depend on file row order.
pub fn train_eval_split(
    records: &[DollyRecord],
    eval: EvalSize,
    seed: u64,
) -> Result<(Vec<DollyRecord>, Vec<DollyRecord>), DollyError> {
    let eval_n = match eval {
        EvalSize::Fraction(f) if (0.0..=1.0).contains(&f) => {
            (f * records.len() as f64).round() as usize
        }
        EvalSize::Fraction(f) => {
            return Err(DollyError::Config(format!(
                "train_eval_split: eval fraction {f} is not in [0, 1]"
            )))
        }
        EvalSize::Count(n) if n <= records.len() => n,
        EvalSize::Count(n) => {
            return Err(DollyError::Config(format!(
                "train_eval_split: eval count {n} exceeds the {} records",
                records.len()
            )))
        }
    };
    let mut order = canonical_order(records, |_| true);
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let pick = |ix: &[usize]| ix.iter().map(|&i| records[i].clone()).collect::<Vec<_>>();
    Ok((pick(&order[eval_n..]), pick(&order[..eval_n])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_sum_to_n_and_break_ties_by_name() {
        let sizes: BTreeMap<&str, usize> = [("a", 1), ("b", 1), ("c", 1)].into_iter().collect();
        let q = proportional_quotas(&sizes, 2);
        assert_eq!(q["a"], 1);
        assert_eq!(q["b"], 1);
        assert_eq!(q["c"], 0);
    }
}
