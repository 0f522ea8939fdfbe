//! Matrix products on host memory, into buffers this crate owns.
//!
//! burn's CPU backend calls the same `gemm` crate, but allocates every product's output
//! as a zero-filled byte vector and then copies it once more into a 16-byte-aligned
//! allocation: two fresh buffers and a copy per product. For a linear's `[1024, 2048]`
//! output that is three passes over 8 MB and two rounds of page faults; in an evaluation's
//! profile through burn's outputs the kernel's page clearing is 14% of the time, most of it
//! under the LM head's products (`docs/perf.md`, "Products into our own buffers"). Here the
//! output is one `Vec<f32>` that becomes the tensor's storage as it is.

use burn::tensor::{Tensor, TensorData};

use crate::kernels::host::{runs_on_host, with_host_f32};

/// Products smaller than this many multiply-adds run on one thread: splitting them
/// costs more than it saves (the threshold burn's CPU backend uses).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, every matrix given by its slice and its
/// (column stride, row stride) in elements, so transposes are free. `accumulate` adds to
/// `dst` instead of overwriting it.
///
/// Panics when a stride reaches past a slice (a bug in the caller, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_cs, dst_rs): (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_cs, lhs_rs): (isize, isize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (isize, isize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |cs: isize, rs: isize, rows: usize, cols: usize| (rows as isize - 1) * rs + (cols as isize - 1) * cs;
    assert!(last(dst_cs, dst_rs, m, n) < dst.len() as isize, "gemm: dst too small");
    if k > 0 {
        assert!(last(lhs_cs, lhs_rs, m, k) < lhs.len() as isize, "gemm: lhs too small");
        assert!(last(rhs_cs, rhs_rs, k, n) < rhs.len() as isize, "gemm: rhs too small");
    }
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index the strides reach inside the slices,
    // and `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `lhs [m, k] · rhs [k, n]`. On the CPU backend, when no gradient flows through either
/// side, one product into a buffer of our own (see the module doc); otherwise burn's.
pub fn matmul(lhs: Tensor<2>, rhs: Tensor<2>) -> Tensor<2> {
    let device = lhs.device();
    if !runs_on_host(&device) || lhs.is_tracked() || rhs.is_tracked() {
        return lhs.matmul(rhs);
    }
    let ([m, k], [k2, n]) = (lhs.dims(), rhs.dims());
    assert_eq!(k, k2, "matmul: [{m}, {k}] · [{k2}, {n}]");
    let mut out = vec![0.0f32; m * n];
    with_host_f32(lhs, |a| {
        with_host_f32(rhs, |b| {
            gemm_f32((m, n, k), &mut out, (1, n as isize), false, a, (1, k as isize), b, (1, n as isize))
        })
    });
    Tensor::from_data(TensorData::new(out, [m, n]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 1999) as f32 / 999.0 - 1.0).collect()
    }

    /// The product written out from its definition, in f64.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            }
        }
        c
    }

    #[test]
    fn products_match_the_definition_small_and_threaded() {
        let device = Device::flex();
        // The second shape crosses the threading threshold.
        for (m, k, n) in [(3, 5, 7), (200, 300, 160)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let want = reference(&a, &b, m, k, n);
            let lhs = Tensor::<2>::from_data(TensorData::new(a, [m, k]), &device);
            let rhs = Tensor::<2>::from_data(TensorData::new(b, [k, n]), &device);
            let got = matmul(lhs, rhs).into_data().try_to_vec::<f32>().unwrap();
            let worst = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-4 * k as f64, "[{m}, {k}] · [{k}, {n}]: worst error {worst}");
        }
    }

    #[test]
    fn strides_read_a_transposed_operand_and_accumulate_adds() {
        let (m, k, n) = (4, 6, 5);
        let (a, bt) = (values(m * k, 3), values(n * k, 4)); // bt is [n, k]
        let b: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect(); // [k, n]
        let want = reference(&a, &b, m, k, n);
        let mut dst = vec![1.0f32; m * n];
        gemm_f32((m, n, k), &mut dst, (1, n as isize), true, &a, (1, k as isize), &bt, (k as isize, 1));
        for (d, w) in dst.iter().zip(&want) {
            assert!((*d as f64 - (w + 1.0)).abs() < 1e-5, "{d} vs {}", w + 1.0);
        }
    }
}
