//! Distillation losses against values worked out independently (double precision, plain
//! Python `math`, in the comments), plus gradient checks by central finite differences.

use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_distill::{
    cross_entropy_rows, divergence_rows, kd_loss, kd_loss_topk, DistillConfig, Divergence, TeacherTopK,
    TopKCache,
};

/// The hand example: 2 rows, vocabulary 3.
const STUDENT: [f32; 6] = [1.0, 2.0, 0.5, 0.0, -1.0, 3.0];
const TEACHER: [f32; 6] = [2.0, 1.0, 0.0, 0.5, 0.5, 2.0];
const TARGETS: [i64; 2] = [1, 2];

fn t2(v: &[f32], rows: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [rows, v.len() / rows]), device)
}

fn ids1(v: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

fn ids2(v: &[i64], rows: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [rows, v.len() / rows]), device)
}

fn vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

fn cfg(divergence: Divergence, beta: Option<f64>) -> DistillConfig {
    DistillConfig { divergence, beta, ..DistillConfig::default() }
}

fn close(got: f64, want: f64, what: &str) {
    let tol = 2e-6 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (diff {:e})", (got - want).abs());
}

fn hand_loss(c: &DistillConfig) -> f64 {
    let d = Device::flex();
    scalar(kd_loss(t2(&STUDENT, 2, &d), t2(&TEACHER, 2, &d), ids1(&TARGETS, &d), c))
}

fn hand_rows(c: &DistillConfig) -> Vec<f32> {
    let d = Device::flex();
    vec1(divergence_rows(t2(&STUDENT, 2, &d), t2(&TEACHER, 2, &d), c))
}

// With T = 2, P = softmax(teacher / 2), Q = softmax(student / 2):
//   CE rows (T = 1)             = 0.46436878410794513, 0.06588390375742925 (sum 0.5302526878653744)
//   KL(P‖Q) rows                = 0.10462921801478149, 0.12702158768695662
//   KL(Q‖P) rows                = 0.09987119686403953, 0.11105075379704821
//   JSD_0.5 rows                = 0.02529520831984345, 0.029173555261042726
//   JSD_0.3 rows (M = .3P+.7Q)  = 0.02147745725681773, 0.025214085178719963
// and the loss is Σ_rows 0.5·4·D + 0.5·CE.

#[test]
fn forward_kl_kd_loss_matches_hand_value() {
    let c = DistillConfig::default();
    assert_eq!((c.alpha, c.temperature, c.divergence), (0.5, 2.0, Divergence::ForwardKl));
    let rows = hand_rows(&c);
    close(rows[0] as f64, 0.10462921801478149, "KL row 0");
    close(rows[1] as f64, 0.12702158768695662, "KL row 1");
    close(hand_loss(&c), 0.7284279553361634, "forward-KL KD loss");
}

#[test]
fn reverse_kl_kd_loss_matches_hand_value() {
    let c = cfg(Divergence::ReverseKl, None);
    let rows = hand_rows(&c);
    close(rows[0] as f64, 0.09987119686403953, "reverse KL row 0");
    close(rows[1] as f64, 0.11105075379704821, "reverse KL row 1");
    close(hand_loss(&c), 0.6869702452548627, "reverse-KL KD loss");
}

#[test]
fn generalized_jsd_matches_hand_values() {
    let c = cfg(Divergence::Jsd, None);
    assert_eq!(c.jsd_beta(), 0.5);
    let rows = hand_rows(&c);
    close(rows[0] as f64, 0.02529520831984345, "JSD_0.5 row 0");
    close(rows[1] as f64, 0.029173555261042726, "JSD_0.5 row 1");
    close(hand_loss(&c), 0.37406387109445954, "JSD_0.5 KD loss");

    let c = cfg(Divergence::Jsd, Some(0.3));
    let rows = hand_rows(&c);
    close(rows[0] as f64, 0.02147745725681773, "JSD_0.3 row 0");
    close(rows[1] as f64, 0.025214085178719963, "JSD_0.3 row 1");
    close(hand_loss(&c), 0.3585094288037626, "JSD_0.3 KD loss");

    // TRL's end points: β = 0 is forward KL, β = 1 reverse KL.
    let fwd = hand_loss(&DistillConfig::default());
    let rev = hand_loss(&cfg(Divergence::ReverseKl, None));
    close(hand_loss(&cfg(Divergence::Jsd, Some(0.0))), fwd, "JSD_0 = forward KL");
    close(hand_loss(&cfg(Divergence::Jsd, Some(1.0))), rev, "JSD_1 = reverse KL");
}

#[test]
fn jsd_with_beta_one_half_is_symmetric_and_others_are_not() {
    let d = Device::flex();
    let swap = |c: &DistillConfig| {
        let ab = vec1(divergence_rows(t2(&STUDENT, 2, &d), t2(&TEACHER, 2, &d), c));
        let ba = vec1(divergence_rows(t2(&TEACHER, 2, &d), t2(&STUDENT, 2, &d), c));
        ab.iter().zip(&ba).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    };
    let sym = swap(&cfg(Divergence::Jsd, Some(0.5)));
    assert!(sym < 1e-7, "JSD_0.5 asymmetry {sym}");
    assert!(swap(&cfg(Divergence::Jsd, Some(0.3))) > 1e-3, "JSD_0.3 should not be symmetric");
    assert!(swap(&DistillConfig::default()) > 1e-3, "KL should not be symmetric");
}

#[test]
fn alpha_zero_is_plain_cross_entropy() {
    let d = Device::flex();
    let c = DistillConfig { alpha: 0.0, ..DistillConfig::default() };
    close(hand_loss(&c), 0.5302526878653744, "alpha 0 = CE");
    let ce = vec1(cross_entropy_rows(t2(&STUDENT, 2, &d), ids1(&TARGETS, &d)));
    close(ce[0] as f64, 0.46436878410794513, "CE row 0");
    // The teacher no longer matters.
    let other = scalar(kd_loss(t2(&STUDENT, 2, &d), t2(&STUDENT, 2, &d), ids1(&TARGETS, &d), &c));
    close(other, 0.5302526878653744, "alpha 0 ignores the teacher");
    // alpha = 1: T²·D only, no data term.
    let c1 = DistillConfig { alpha: 1.0, ..DistillConfig::default() };
    close(hand_loss(&c1), 4.0 * (0.10462921801478149 + 0.12702158768695662), "alpha 1 = T²·KL");
}

#[test]
fn top_k_loss_renormalises_over_the_cached_ids() {
    let d = Device::flex();
    // Teacher top-2: row 0 ids [0, 1] (2.0, 1.0), row 1 ids [2, 0] (2.0, 0.5); KL over the
    // renormalised pairs: 0.1224593312018546, 0.05515824748630782 -> loss 0.620361501309012.
    let c = DistillConfig::default();
    let ids = ids2(&[0, 1, 2, 0], 2, &d);
    let logits = t2(&[2.0, 1.0, 2.0, 0.5], 2, &d);
    let got = scalar(kd_loss_topk(t2(&STUDENT, 2, &d), ids, logits, ids1(&TARGETS, &d), &c));
    close(got, 0.620361501309012, "top-2 KD loss");

    // With k = V the cache is exact: equal to the full loss for every divergence.
    for c in [DistillConfig::default(), cfg(Divergence::ReverseKl, None), cfg(Divergence::Jsd, Some(0.3))] {
        let top = TeacherTopK::from_logits(t2(&TEACHER, 2, &d), 3);
        let (ids, logits) = top.tensors(&d);
        let got = scalar(kd_loss_topk(t2(&STUDENT, 2, &d), ids, logits, ids1(&TARGETS, &d), &c));
        close(got, hand_loss(&c), &format!("top-V = full, {:?}", c.divergence));
    }
}

#[test]
fn teacher_top_k_and_its_cache_round_trip() {
    let d = Device::flex();
    let teacher = [0.1, 3.0, -1.0, 2.0, 0.5, /* row 1 */ 4.0, -2.0, 1.5, 0.0, 2.5];
    let top = TeacherTopK::from_logits(t2(&teacher, 2, &d), 3);
    assert_eq!(top.ids, vec![1, 3, 4, 0, 4, 2]);
    assert_eq!(top.logits, vec![3.0, 2.0, 0.5, 4.0, 2.5, 1.5]);
    let row1 = top.slice_rows(1..2);
    assert_eq!((row1.rows, row1.ids.clone()), (1, vec![0, 4, 2]));

    let mut cache = TopKCache::default();
    cache.insert("dolly-17", top.clone());
    cache.insert("dolly-3", row1);
    let path = std::env::temp_dir().join(format!("sweelol-distill-{}-topk.safetensors", std::process::id()));
    cache.save(&path).unwrap();
    let back = TopKCache::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, cache);
    assert_eq!(back.get("dolly-17"), Some(&top));
}

/// Deterministic "random" values in [-scale, scale].
fn pseudo(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Errors of the autodiff gradient of `loss(student)` against central differences with
/// step `eps`, over every logit: (max elementwise relative error, relative to
/// max(|g|, 0.05) so near-zero entries, where f32 rounding dominates, are judged
/// absolutely; normwise `max|g − fd| / max|g|`).
fn grad_check(loss: &dyn Fn(Tensor<2>, &Device) -> Tensor<1>, x: &[f32], rows: usize, eps: f32) -> (f64, f64) {
    let ad = Device::flex().autodiff();
    let leaf = t2(x, rows, &ad).require_grad();
    let grads = loss(leaf.clone(), &ad).backward();
    let g = leaf.grad(&grads).expect("gradient").into_data().try_into_vec::<f32>().unwrap();
    let plain = Device::flex();
    let f = |v: &[f32]| scalar(loss(t2(v, rows, &plain), &plain));
    let (mut worst, mut worst_abs) = (0f64, 0f64);
    for i in 0..x.len() {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[i] += eps;
        down[i] -= eps;
        let fd = (f(&up) - f(&down)) / (2.0 * eps as f64);
        let abs = (g[i] as f64 - fd).abs();
        worst = worst.max(abs / (g[i].abs() as f64).max(0.05));
        worst_abs = worst_abs.max(abs);
    }
    let g_max = g.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    (worst, worst_abs / g_max)
}

#[test]
fn kd_gradients_match_central_finite_differences() {
    let (rows, vocab) = (3, 7);
    let student = pseudo(rows * vocab, 1, 3.0);
    let teacher = pseudo(rows * vocab, 2, 3.0);
    let targets = [1i64, 6, 0];
    let top_ids: Vec<i64> = vec![0, 2, 5, 6, 1, 3, 4, 0, 2];
    let top_logits = pseudo(9, 3, 3.0);
    let configs = [
        DistillConfig::default(),
        cfg(Divergence::ReverseKl, None),
        cfg(Divergence::Jsd, Some(0.5)),
        cfg(Divergence::Jsd, Some(0.1)),
        DistillConfig { alpha: 1.0, temperature: 1.0, ..DistillConfig::default() },
        DistillConfig { alpha: 0.0, ..DistillConfig::default() },
    ];
    let mut summary = Vec::new();
    for c in &configs {
        let full = |s: Tensor<2>, d: &Device| kd_loss(s, t2(&teacher, rows, d), ids1(&targets, d), c);
        let topk = |s: Tensor<2>, d: &Device| {
            kd_loss_topk(s, ids2(&top_ids, rows, d), t2(&top_logits, rows, d), ids1(&targets, d), c)
        };
        for (name, f) in [("full", &full as &dyn Fn(Tensor<2>, &Device) -> Tensor<1>), ("top-3", &topk)] {
            let (e2, n2) = grad_check(f, &student, rows, 1e-2);
            let (e3, n3) = grad_check(f, &student, rows, 1e-3);
            summary.push(format!(
                "{:?}/β={:?}/α={}/T={}/{name}: eps 1e-2 {e2:.1e} (normwise {n2:.1e}), eps 1e-3 {e3:.1e} (normwise {n3:.1e})",
                c.divergence, c.beta, c.alpha, c.temperature
            ));
            // The f32 loss itself is only good to ~1e-6, so the differences carry about
            // 1e-6 / (2·eps) of noise: ~5e-5 at eps 1e-2, ~5e-4 at 1e-3 (the O(eps²)
            // truncation is smaller). A wrong gradient (a missing T², a teacher term, a
            // sign) is off by O(1).
            assert!(e2 < 5e-3, "{name} {c:?}: eps 1e-2 relative error {e2}");
            assert!(e3 < 3e-2, "{name} {c:?}: eps 1e-3 relative error {e3}");
        }
    }
    println!("finite-difference check (max rel err):\n  {}", summary.join("\n  "));
}

#[test]
fn no_gradient_reaches_the_teacher() {
    let ad = Device::flex().autodiff();
    let s = t2(&STUDENT, 2, &ad).require_grad();
    let t = t2(&TEACHER, 2, &ad).require_grad();
    for c in [DistillConfig::default(), cfg(Divergence::ReverseKl, None), cfg(Divergence::Jsd, None)] {
        let grads = kd_loss(s.clone(), t.clone(), ids1(&TARGETS, &ad), &c).backward();
        assert!(s.grad(&grads).is_some());
        assert!(t.grad(&grads).is_none(), "{:?}: teacher got a gradient", c.divergence);
    }
}

#[test]
fn bad_configs_are_rejected_with_clear_errors() {
    let err = |text: &str| DistillConfig::from_toml(text).unwrap_err().to_string();
    let e = err("alpha = 1.5");
    assert!(e.contains("alpha must be in [0, 1], got 1.5"), "{e}");
    let e = err("temprature = 2.0");
    assert!(e.contains("unknown field `temprature`"), "{e}");
    let e = err("temperature = 0.0");
    assert!(e.contains("temperature must be positive"), "{e}");
    let e = err("divergence = \"jsd\"\nbeta = 2.0");
    assert!(e.contains("beta must be in [0, 1]"), "{e}");
    let e = err("beta = 0.5");
    assert!(e.contains("`beta` only applies"), "{e}");
    let e = err("teacher_logits = \"top_k\"");
    assert!(e.contains("unknown field `teacher_logits`"), "{e}");
    let e = err("divergence = \"kl\"");
    assert!(e.contains("forward_kl"), "{e}");

    let c = DistillConfig::from_toml("divergence = \"jsd\"\nbeta = 0.9").unwrap();
    assert_eq!(c.jsd_beta(), 0.9);
    assert_eq!(DistillConfig::from_toml("").unwrap(), DistillConfig::default());
}
