//! Fast paths for tensors in host memory (burn's CPU backend, `flex`).
//!
//! burn runs `gelu_approximate` as eight separate tensor operations (a `powf`, a
//! `tanh`, adds and multiplies, each a full pass that allocates), and autodiff adds one
//! backward per operation. On the CPU that was about a seventh of an evaluation's time
//! (`docs/perf.md`). Here GeGLU, `gelu_tanh(gate) · up`, is one vectorised pass over host
//! memory; under autodiff its gradient is put back into the graph with constant
//! coefficients (see [`geglu`]). Other backends keep burn's operations.

use burn::backend::Flex;
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use rayon::prelude::*;

/// Whether tensors on `device` live in host memory.
pub fn runs_on_host(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Whether the head kernels on host memory (the fused head + loss, the blocked eval head,
/// KD's teacher table) serve a model on `device`: on the host, in either precision. They
/// never build the `[rows, 262144]` logits as tensors; in bf16 the training head's products
/// are bf16 (`sweelol_gemma::kernels::head`), the evaluation head and KD's teacher logits f32.
pub fn host_head_kernels(device: &Device) -> bool {
    runs_on_host(device)
}

/// The data of `t` as f32 on the host; no copy when the tensor owns its buffer alone.
pub fn host_f32<const D: usize>(t: Tensor<D>) -> TensorData {
    let data = t.into_data();
    if data.dtype() == DType::F32 {
        data
    } else {
        data.convert::<f32>()
    }
}

/// `f` on the f32 data of `t`, without autodiff. A contiguous f32 tensor of the CPU backend
/// is read where it lies, even while a parameter shares its buffer (`host_f32` would copy
/// it twice there: burn-flex's `into_data` clones a shared buffer, then cubecl realigns the
/// clone); anything else goes through [`host_f32`].
pub fn with_host_f32<const D: usize, R>(t: Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    let t = t.inner();
    if runs_on_host(&t.device()) && t.dtype() == DType::F32 {
        if let Ok(flex) = t.clone().try_into_primitive::<Flex>() {
            if let Some((start, end)) = flex.layout().contiguous_offsets() {
                return f(&flex.storage::<f32>()[start..end]);
            }
        }
    }
    f(host_f32(t).as_slice::<f32>().expect("f32"))
}

/// `t`'s values as a vector without a copy, when `t` is a contiguous f32 tensor in host
/// memory that alone owns its buffer; `None` otherwise.
pub fn into_owned_f32(t: Tensor<1>) -> Option<Vec<f32>> {
    let t = t.inner();
    if !runs_on_host(&t.device()) || t.dtype() != DType::F32 {
        return None;
    }
    let flex = t.try_into_primitive::<Flex>().ok()?;
    if !flex.is_unique() || flex.layout().contiguous_offsets() != Some((0, flex.layout().num_elements())) {
        return None;
    }
    flex.into_data().try_into_vec::<f32>().ok()
}

/// `gelu_tanh(gate) · up`, as transformers' `GELUTanh` then the product (f32).
///
/// On the host this is one pass. When a gradient must flow, the result is
/// `h + (gate·A + up·B − detach(gate·A + up·B))` with the constants
/// `A = gelu'(gate)·up`, `B = gelu(gate)` from the same pass: its value is exactly `h`
/// (the bracket is a tensor minus itself) and its gradients are exactly
/// `A·dy` and `B·dy`, the product rule — two multiplies in backward instead of eight
/// operations and their backwards.
pub fn geglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if !runs_on_host(&gate.device()) || gate.dims() != up.dims() {
        return gelu_approximate(gate) * up;
    }
    if gate.is_tracked() || up.is_tracked() {
        geglu_tracked(gate, up)
    } else {
        geglu_untracked(gate, up)
    }
}

/// Values only. The inputs are read where they lie ([`with_host_f32`]).
fn geglu_untracked<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let (dims, device) = (gate.dims(), gate.device());
    let h = with_host_f32(gate, |g| {
        with_host_f32(up, |u| {
            let mut h = vec![0.0f32; g.len()];
            h.par_chunks_mut(CHUNK).enumerate().for_each(|(i, h)| {
                let at = i * CHUNK..i * CHUNK + h.len();
                geglu_values(&g[at.clone()], &u[at], h)
            });
            h
        })
    });
    Tensor::from_data(TensorData::new(h, dims), &device)
}

/// Values and the constant-coefficient gradient (see [`geglu`]); the inputs stay in the graph.
///
/// The inputs are read where they lie ([`with_host_f32`]): `host_f32` of a tensor the graph
/// also holds copied it twice (burn-flex clones a shared buffer, cubecl realigns the clone),
/// 64 MiB into fresh pages per layer of a 4 x 512 micro-batch, all on the calling thread
/// while the workers waited (`docs/perf.md`).
fn geglu_tracked<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let (dims, device) = (gate.dims(), gate.device());
    let n = dims.iter().product();
    let (mut h, mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    with_host_f32(gate.clone(), |g| {
        with_host_f32(up.clone(), |u| {
            h.par_chunks_mut(CHUNK)
                .zip(a.par_chunks_mut(CHUNK))
                .zip(b.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(i, ((h, a), b))| {
                    let at = i * CHUNK..i * CHUNK + h.len();
                    geglu_with_slopes(&g[at.clone()], &u[at], h, a, b)
                })
        })
    });
    let tensor = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, dims), &device);
    let t = gate * tensor(a) + up * tensor(b);
    tensor(h) + (t.clone() - t.detach())
}

/// Inverted dropout: each element of `x` kept and scaled by `1 / (1 - p)` with probability
/// `1 - p`, else zeroed — burn's `Bernoulli` draw and two multiplies, as one host pass that
/// writes the scaled mask (then one multiply in the graph, whose backward is the same
/// mask). On the host, the mask comes from a counter-based generator (SplitMix64 of the
/// element's index) seeded by one draw from the device's RNG, so a run that seeds the
/// device per step draws the same masks when resumed. Other backends use burn's draw.
pub fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    let keep = 1.0 - p;
    let device = x.device();
    if !runs_on_host(&device) {
        let m = x.random_like(Distribution::Bernoulli(keep));
        return x * (m * (1.0 / keep));
    }
    let dims = x.dims();
    let draw = host_f32(Tensor::<1>::random([2], Distribution::Default, &device).inner());
    let draw = draw.as_slice::<f32>().expect("f32");
    let seed = ((draw[0].to_bits() as u64) << 32) | draw[1].to_bits() as u64;
    let mask = dropout_mask(dims.iter().product(), keep, seed);
    x * Tensor::<D>::from_data(TensorData::new(mask, dims), &device)
}

/// `n` multipliers, each `1 / keep` with probability `keep` (the top 32 bits of the
/// element's SplitMix64 value below `keep · 2³²`), else 0.
fn dropout_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0.0f32; n];
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
        for (j, m) in out.iter_mut().enumerate() {
            let r = splitmix64(seed.wrapping_add(((c * CHUNK + j) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            *m = if r >> 32 < threshold { scale } else { 0.0 };
        }
    });
    mask
}

/// SplitMix64's output function (Steele, Lea, Flood 2014).
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// `sqrt(2/π)`, as transformers' `GELUTanh` (and burn) use it.
const SQRT_2_OVER_PI: f32 = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;
const GELU_CUBIC: f32 = 0.044715;

fn geglu_values(g: &[f32], u: &[f32], h: &mut [f32]) {
    dispatch(|| {
        for ((h, &x), &u) in h.iter_mut().zip(g).zip(u) {
            let s = one_plus_tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x));
            *h = 0.5 * x * s * u;
        }
    })
}

fn geglu_with_slopes(g: &[f32], u: &[f32], h: &mut [f32], a: &mut [f32], b: &mut [f32]) {
    dispatch(|| {
        for ((((h, a), b), &x), &u) in h.iter_mut().zip(a.iter_mut()).zip(b.iter_mut()).zip(g).zip(u) {
            let s = one_plus_tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x));
            let gelu = 0.5 * x * s;
            // 1 − tanh² = (1 + tanh)(1 − tanh) = s·(2 − s).
            let slope = 0.5 * s + 0.5 * x * s * (2.0 - s) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
            *h = gelu * u;
            *a = slope * u;
            *b = gelu;
        }
    })
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (the loops above are written
/// so the compiler vectorises them), else as built.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

/// The largest element of `z` (`-inf` when empty; NaNs are skipped), sixteen lanes at a
/// time: `f32::max` in a fold does not vectorise.
pub fn max(z: &[f32]) -> f32 {
    dispatch(|| {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let chunks = z.chunks_exact(16);
        let mut m = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        for c in chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                if x > *l {
                    *l = x;
                }
            }
        }
        for l in lanes {
            if l > m {
                m = l;
            }
        }
        m
    })
}

/// `Σ exp(zᵢ − shift)` for `zᵢ ≤ shift` (log-sum-exp's sum with `shift` the maximum),
/// summed in f64 eight lanes at a time, leaving `exp(zᵢ − shift)` in place of each `zᵢ`;
/// [`exp_neg`] vectorises where libm's scalar `expf` (a tenth of an evaluation's time)
/// did not.
pub fn exp_in_place(z: &mut [f32], shift: f32) -> f64 {
    dispatch(|| {
        let mut lanes = [0.0f64; 8];
        let mut chunks = z.chunks_exact_mut(8);
        for c in chunks.by_ref() {
            for (l, x) in lanes.iter_mut().zip(c) {
                *x = exp_neg(*x - shift);
                *l += *x as f64;
            }
        }
        let mut tail = 0.0f64;
        for x in chunks.into_remainder() {
            *x = exp_neg(*x - shift);
            tail += *x as f64;
        }
        lanes.iter().sum::<f64>() + tail
    })
}

/// `1 + tanh(x)` = `2·sigmoid(2x)`, without the cancellation of `1 + tanh(x)` for negative
/// `x` (where GELU's value and slope are tiny): `2/(1 + e)` or `2e/(1 + e)`, `e = exp(−2|x|)`.
#[inline(always)]
pub fn one_plus_tanh(x: f32) -> f32 {
    let e = exp_neg(-2.0 * x.abs());
    let num = if x < 0.0 { 2.0 * e } else { 2.0 };
    num / (1.0 + e)
}

/// `exp(x)` for `x ≤ 0` (Cody–Waite reduction, degree-6 polynomial), branch-free; `x` is
/// clamped at −87 (exp ≈ 1.6e-38, the smallest normal range). A loop of it vectorises
/// where it is compiled with AVX2 enabled ([`dispatch`]'s closures, or a function with
/// `#[target_feature]`, as distillation's loss row has).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    // Round to nearest with the 1.5·2²³ trick (exact for |x·log2e| < 2²²).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_452 + r * 0.001_388_890_5)))));
    // `shifted` is 1.5·2²³ + n, so its bits are the constant's plus n: integer steps that
    // vectorise, where `n as i32` (a saturating conversion) is done one lane at a time.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((n_bits + 127) << 23) as u32);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu64(x: f64) -> f64 {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
    }

    /// The power of two from the rounded value's bits is the one `n as i32` gives, so
    /// `exp_neg` is the same function bit for bit, and within 2 ulp of f64's `exp`.
    #[test]
    fn exp_neg_scale_from_bits_is_the_converted_one() {
        let by_conversion = |x: f32| {
            let x = x.max(-87.0);
            let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
            let p = 1.0
                + r * (1.0
                    + r * (0.5
                        + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_452 + r * 0.001_388_890_5)))));
            p * f32::from_bits(((n as i32 + 127) << 23) as u32)
        };
        for i in 0..=200_000 {
            let x = -90.0 + i as f32 * (90.5 / 200_000.0);
            let got = exp_neg(x);
            assert_eq!(got.to_bits(), by_conversion(x).to_bits(), "exp_neg({x})");
            if x >= -87.0 {
                let want = (x as f64).exp();
                assert!((got as f64 - want).abs() <= 2.0 * f32::EPSILON as f64 * want, "exp_neg({x}) = {got}, exp = {want}");
            }
        }
    }

    #[test]
    fn max_and_sums_of_exponentials_match_f64() {
        // 1003 elements: vector bodies and a scalar tail, a maximum inside the tail too.
        for n in [0usize, 5, 1003] {
            let mut z: Vec<f32> = (0..n).map(|i| (i as f32 * 0.377).sin() * 30.0 - 10.0).collect();
            if n > 0 {
                z[n - 1] = 25.0;
            }
            let want_max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&z), want_max, "{n} elements");
            let shift = if n > 0 { want_max } else { 0.0 };
            let want: f64 = z.iter().map(|&x| ((x - shift) as f64).exp()).sum();
            let mut e = z.clone();
            let got = exp_in_place(&mut e, shift);
            assert!((got - want).abs() <= 1e-6 * want.max(1e-30), "Σ exp over {n}: {got} vs {want}");
            for (x, e) in z.iter().zip(&e) {
                let want = ((x - shift) as f64).exp();
                assert!((*e as f64 - want).abs() <= 1e-6 * want + 1e-37, "exp({x} - {shift}) = {e} vs {want}");
            }
        }
    }

    #[test]
    fn one_plus_tanh_keeps_its_relative_accuracy_even_in_the_negative_tail() {
        for i in -2000..=2000 {
            let x = -(i as f32) * 0.02;
            // 2·sigmoid(2x) in f64: `1 + tanh` would cancel in f64 too.
            let want = 2.0 / (1.0 + (-2.0 * x as f64).exp());
            let got = one_plus_tanh(x) as f64;
            assert!((got - want).abs() <= 1e-6 * want, "1 + tanh({x}) = {got} vs {want}");
        }
    }

    #[test]
    fn an_element_s_result_does_not_depend_on_where_it_sits() {
        // Vectorised loop bodies and their scalar remainders must agree bit for bit, so a
        // document scores the same alone or inside a batch.
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.7331).sin() * 6.0).collect();
        let us: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.291).cos()).collect();
        let mut whole = vec![0.0; 1000];
        geglu_values(&xs, &us, &mut whole);
        for offset in [1, 3, 7, 13] {
            let mut part = vec![0.0; 1000 - offset];
            geglu_values(&xs[offset..], &us[offset..], &mut part);
            for (i, p) in part.iter().enumerate() {
                assert_eq!(p.to_bits(), whole[i + offset].to_bits(), "element {} at offset {offset}", i + offset);
            }
        }
    }

    #[test]
    fn gelu_and_its_slope_match_f64() {
        let xs: Vec<f32> = (-6000..=6000).map(|i| i as f32 * 1e-3).collect();
        let us: Vec<f32> = xs.iter().map(|x| 1.5 - x * 0.25).collect();
        let n = xs.len();
        let (mut h, mut a, mut b) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        geglu_with_slopes(&xs, &us, &mut h, &mut a, &mut b);
        let mut h2 = vec![0.0; n];
        geglu_values(&xs, &us, &mut h2);
        for i in 0..n {
            let (x, u) = (xs[i] as f64, us[i] as f64);
            let eps = 1e-6;
            let slope = (gelu64(x + eps) - gelu64(x - eps)) / (2.0 * eps);
            let close = |got: f32, want: f64, tol: f64| (got as f64 - want).abs() <= tol * (1.0 + want.abs());
            assert!(close(b[i], gelu64(x), 1e-6), "gelu({x}) = {} vs {}", b[i], gelu64(x));
            assert!(close(h[i], gelu64(x) * u, 1e-6), "h at {x}");
            assert!(close(a[i], slope * u, 1e-5), "slope at {x}: {} vs {}", a[i], slope * u);
            assert_eq!(h[i], h2[i], "values-only pass differs at {x}");
        }
    }

    #[test]
    fn geglu_values_and_gradients_equal_burns_gelu_times_up() {
        // Inputs the graph also holds (read where they lie) and a transposed view (copied
        // first), tracked and not: each against burn's `gelu_approximate(gate) · up`.
        let device = Device::flex().autodiff();
        let data = |seed: f32| -> Vec<f32> { (0..37 * 53).map(|i| (i as f32 * seed).sin() * 4.0).collect() };
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [37, 53]), &device);
        let dy = t(data(0.173));
        for transposed in [false, true] {
            let view = |x: Tensor<2>| if transposed { x.swap_dims(0, 1) } else { x };
            let (gate, up) = (t(data(0.7331)).require_grad(), t(data(0.291)).require_grad());
            let weight = if transposed { dy.clone().swap_dims(0, 1) } else { dy.clone() };
            let ours = geglu(view(gate.clone()), view(up.clone()));
            let grads = (ours.clone() * weight.clone()).sum().backward();
            let (gate2, up2) = (t(data(0.7331)).require_grad(), t(data(0.291)).require_grad());
            let want = gelu_approximate(view(gate2.clone())) * view(up2.clone());
            let grads2 = (want.clone() * weight).sum().backward();
            let untracked = geglu(view(gate.clone().detach()), view(up.clone().detach()));
            let pairs = [
                ("value", ours, want.clone()),
                ("untracked value", untracked, want),
                ("d gate", gate.grad(&grads).unwrap(), gate2.grad(&grads2).unwrap()),
                ("d up", up.grad(&grads).unwrap(), up2.grad(&grads2).unwrap()),
            ];
            for (what, got, want) in pairs {
                let (got, want) = (got.into_data().try_to_vec::<f32>().unwrap(), want.into_data().try_to_vec::<f32>().unwrap());
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 2e-5 * (1.0 + w.abs()), "{what} [{i}], transposed {transposed}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn dropout_keeps_the_asked_share_scaled_and_repeats_with_the_device_seed() {
        let device = Device::flex();
        let x = || Tensor::<2>::ones([1000, 1000], &device);
        let draw = |seed: u64| {
            device.seed(seed);
            dropout(x(), 0.05).into_data().try_into_vec::<f32>().unwrap()
        };
        let (a, again, other) = (draw(7), draw(7), draw(8));
        let scale = (1.0 / 0.95f64) as f32;
        assert!(a.iter().all(|&v| v == 0.0 || v == scale), "every element dropped or scaled by 1/keep");
        let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
        let sigma = (0.95f64 * 0.05 / a.len() as f64).sqrt();
        assert!((kept - 0.95).abs() < 5.0 * sigma, "kept {kept}");
        assert_eq!(a, again, "the same device seed draws the same mask");
        assert_ne!(a, other);
        // Neighbours are not correlated: P(both kept) = keep² within 5 sigma.
        let pairs = a.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64 / (a.len() - 1) as f64;
        assert!((pairs - 0.9025).abs() < 5.0 * (0.9025f64 * 0.0975 / a.len() as f64).sqrt(), "pairs {pairs}");
    }
}
