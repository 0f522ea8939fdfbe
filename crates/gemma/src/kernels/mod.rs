//! Every fast path in one place. Each kernel sits behind one function that picks the way to
//! compute for the tensors it is given: hand-written loops over host memory (burn's CPU
//! backend; f32, or bf16 products where the CPU has native bf16), else the backend's own
//! tensor operations (libtorch, wgpu). Callers never choose; techniques supply only their
//! math (a loss per row, where a teacher's logits come from).
//!
//! - [`gemm`], [`gemm_bf16`]: matrix products in f32 and with bf16 operands (AMX tiles,
//!   `vdpbf16ps`, or rounded operands through the f32 GEMM), and [`bf16_ops`], a bf16
//!   product as one autodiff node.
//! - [`host`]: host-memory access (`host_f32`), the dispatch predicates (`runs_on_host`,
//!   `host_head_kernels`), GeGLU, dropout and the vectorised `max` / `exp` the heads use.
//! - [`head`]: the tied LM head fused with a per-row loss and both gradients, without the
//!   `[tokens, vocabulary]` logits (training).
//! - [`log_probs`]: the head's log-probabilities of chosen tokens, in blocks of rows
//!   (evaluation).
//! - [`node`]: host kernels as single autodiff nodes: [`norm`] (RMSNorm), [`rope`] (rotary
//!   embedding) and [`softmax`] (attention's scaled, masked softmax).
//! - [`adamw`]: AdamW's update of one parameter.
//! - [`memory`]: how host memory is handed out (large blocks on their own mappings, the
//!   rest kept in glibc's heap) and released between jobs.

pub mod adamw;
pub mod bf16_ops;
pub mod gemm;
pub mod gemm_bf16;
pub mod head;
pub mod host;
pub mod log_probs;
pub mod memory;
pub mod node;
pub mod norm;
pub mod rope;
pub mod softmax;
