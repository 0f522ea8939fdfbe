//! Tensors whose data lives in host memory (burn's CPU backend), where a hand-written
//! loop over the buffer can replace a chain of tensor operations.

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Whether tensors on `device` live in host memory.
pub fn runs_on_host(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
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
