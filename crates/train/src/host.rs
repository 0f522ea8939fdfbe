//! Tensors whose data lives in host memory (burn's CPU backend), where a hand-written
//! loop over the buffer can replace a chain of tensor operations. The helpers live with
//! the model ([`sweelol_gemma::host`]), which uses them too.

pub use sweelol_gemma::host::{host_f32, runs_on_host, with_host_f32};
