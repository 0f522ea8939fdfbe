//! What the model's matrix products compute in.
//!
//! `bf16` is mixed precision as PyTorch's autocast does it for a linear layer: both operands
//! of every matrix product (projections, LoRA's factors, attention's two products, the tied
//! head) are rounded to bf16 and multiplied there, where GPUs have their fast units, and
//! the product comes back as f32. Everything else stays f32: the weights themselves (the
//! master copy the optimizer updates; the rounding is part of the graph, so gradients reach
//! them in f32), Adam's moments, RMSNorm, RoPE, the softmax, GeGLU, the loss and every
//! log-likelihood. A product's bf16 output rounding is kept, as on a GPU.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The dtype of matrix products (see the module docs); f32 unless asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32, as transformers computes it (the reference).
    #[default]
    F32,
    /// Matrix products in bf16 from f32 master weights.
    Bf16,
}

impl Precision {
    /// `lhs · rhs` (batched over leading axes) in this precision, returned as f32. bf16
    /// products of host tensors use [`crate::kernels::gemm_bf16`] (native where the CPU can), others
    /// burn's bf16 tensors.
    pub fn matmul<const D: usize>(self, lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
        match self {
            Precision::F32 => lhs.matmul(rhs),
            Precision::Bf16 => match crate::kernels::bf16_ops::matmul(lhs.clone(), rhs.clone()) {
                Some(product) => product,
                None => {
                    let bf16 = |t: Tensor<D>| t.cast(FloatDType::BF16);
                    bf16(lhs).matmul(bf16(rhs)).cast(FloatDType::F32)
                }
            },
        }
    }

    /// A linear layer's product `x [n, in] · w [in, out]`: in f32 through
    /// [`crate::kernels::gemm::matmul`] (its own host buffers on the CPU), else as [`Self::matmul`].
    pub fn linear(self, x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
        match self {
            Precision::F32 => crate::kernels::gemm::matmul(x, w),
            Precision::Bf16 => match crate::kernels::bf16_ops::linear(x.clone(), w.clone()) {
                Some(product) => product,
                None => self.matmul(x, w),
            },
        }
    }

    /// Refuses a precision `device` cannot compute in, before any work: a backend without
    /// bf16 kernels (wgpu compiling to WGSL, as on a software Vulkan) would otherwise fail
    /// inside its own worker thread, not here.
    pub fn check_supported(self, device: &Device) -> crate::Result<()> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Bf16 if device.supports_dtype(DType::BF16) => Ok(()),
            Precision::Bf16 => Err(crate::GemmaError::Other(format!(
                "dtype bf16: the device {device:?} has no bf16 kernels; use dtype f32, or a backend with bf16 (tch-cuda, or flex to emulate it)"
            ))),
        }
    }

    /// Whether bf16 products on `device` run on bf16 hardware (AMX tiles or `vdpbf16ps` on
    /// the CPU backend, a backend's own bf16 kernels elsewhere) rather than emulated through f32,
    /// where bf16 costs more than f32.
    pub fn native_bf16(device: &Device) -> bool {
        if crate::kernels::host::runs_on_host(device) {
            crate::kernels::gemm_bf16::kernel().is_native()
        } else {
            device.supports_dtype(DType::BF16)
        }
    }

    /// The name used in configs, command lines and result identities.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown dtype `{other}`; expected f32 or bf16")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Device, TensorData};
    use half::bf16;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(131)) % 4093) as f32 / 1000.3 - 2.0).collect()
    }

    /// The bf16 product is the exact product of the bf16-rounded operands, rounded once
    /// more to bf16; it comes back as f32, and an f32 product keeps the f32 operands.
    #[test]
    fn bf16_products_round_operands_and_result_and_return_f32() {
        let device = Device::flex();
        let (m, k, n) = (5, 33, 7);
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let round = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| bf16::from_f32(x).to_f64()).collect() };
        let (ra, rb) = (round(&a), round(&b));
        let tensor = |v: &[f32], shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), &device);
        let got = Precision::Bf16.matmul(tensor(&a, [m, k]), tensor(&b, [k, n]));
        assert_eq!(got.dtype(), DType::F32);
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        let exact = Precision::F32.matmul(tensor(&a, [m, k]), tensor(&b, [k, n])).into_data().try_to_vec::<f32>().unwrap();
        let mut differs_from_f32 = 0;
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| ra[i * k + p] * rb[p * n + j]).sum();
                let g = got[i * n + j] as f64;
                // One bf16 rounding of the result: half an ulp of 8 significant bits.
                assert!((g - want).abs() <= want.abs() * 2f64.powi(-8) + 1e-6, "[{i}, {j}]: {g} vs {want}");
                differs_from_f32 += usize::from(got[i * n + j] != exact[i * n + j]);
            }
        }
        assert!(differs_from_f32 > m * n / 2, "bf16 products should differ from f32 ones ({differs_from_f32} of {})", m * n);
    }

    #[test]
    fn the_cpu_backend_computes_bf16() {
        assert!(Precision::Bf16.check_supported(&Device::flex()).is_ok());
        assert!(Precision::F32.check_supported(&Device::flex()).is_ok());
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert!("fp8".parse::<Precision>().unwrap_err().contains("f32 or bf16"));
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        let json = serde_json::to_string(&Precision::Bf16).unwrap();
        assert_eq!(json, "\"bf16\"");
    }
}
