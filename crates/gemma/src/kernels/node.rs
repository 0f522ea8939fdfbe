//! Host kernels as single nodes of burn's autodiff graph on the CPU backend.
//!
//! burn records a composite operation as one node per tensor operation: RMSNorm is nine,
//! softmax six. On the CPU backend each runs alone on the calling thread while the other
//! cores wait, allocates its output, and many save a full-size tensor for backward. A
//! kernel registered as one node ([`Backward`]) runs forward and backward as one parallel
//! pass each and keeps only what its backward reads ([`super::norm`], [`super::softmax`]).
//! The helpers here move tensors between the graph and host memory.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, BackendTypes, Flex};
use burn::tensor::{Shape, Tensor, TensorData};

/// The CPU backend under autodiff, as the runtime `Device` builds it.
pub type AdFlex = Autodiff<Flex>;

/// A tensor of [`AdFlex`]: the CPU tensor and its place in the graph.
pub type AdTensor = <AdFlex as BackendTypes>::FloatTensorPrimitive;

/// `t` as a node of the CPU backend's autodiff graph; `None` for a tensor outside it
/// (another backend, or a device without autodiff).
pub fn ad_tensor<const D: usize>(t: Tensor<D>) -> Option<AdTensor> {
    t.try_into_primitive::<AdFlex>().ok()
}

/// A graph tensor back as a [`Tensor`].
pub fn from_ad<const D: usize>(t: AdTensor) -> Tensor<D> {
    Tensor::from_primitive::<AdFlex>(t)
}

/// `t` with its elements contiguous from offset 0 (no copy when they already are).
pub fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The f32 elements of a tensor made by [`contiguous`] (or [`flex`]).
pub fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A CPU tensor of `shape` holding `values`.
pub fn flex(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The shape of a CPU tensor.
pub fn shape(t: &FlexTensor) -> Shape {
    t.layout().shape().clone()
}
