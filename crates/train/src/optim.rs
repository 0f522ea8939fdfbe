//! AdamW with decoupled weight decay on matrices only, global-norm clipping, and state
//! keyed by parameter path so it survives reloading the model.
//!
//! burn's `ModuleOptimizer` keys its state by `ParamId`, which is random per load, and clips
//! per parameter; a checkpoint must resume into a freshly loaded model and clipping must be
//! global, so this optimizer is our own. The update is PyTorch's `torch.optim.AdamW`:
//! `p ← p·(1 − lr·wd)` (if decayed), `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)`.
//!
//! The update itself is a kernel ([`sweelol_gemma::kernels::adamw`]): one fused pass in place
//! on a CPU backend, tensor operations elsewhere.

use std::collections::{BTreeMap, HashMap, HashSet};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;
use sweelol_gemma::{LazyTensor, WeightMap};

use sweelol_gemma::kernels::adamw::{self, StepConstants, CHUNK};
use sweelol_gemma::kernels::host::{runs_on_host, with_host_f32};
use crate::params::as_leaf;

/// Adam hyper-parameters (the learning rate comes per step from the schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// Moments of one parameter, flattened, on the parameter's (non-autodiff) device.
#[derive(Clone, Debug)]
struct Moments {
    step: u64,
    m: Tensor<1>,
    v: Tensor<1>,
}

#[derive(Clone, Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Paths that get weight decay (rank ≥ 2 unless the model says otherwise).
    decayed: HashSet<String>,
    state: HashMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, decayed: HashSet<String>) -> Self {
        AdamW { config, decayed, state: HashMap::new() }
    }

    /// Number of parameters holding optimizer state (only ones that received a gradient).
    pub fn num_states(&self) -> usize {
        self.state.len()
    }

    pub fn has_state(&self, path: &str) -> bool {
        self.state.contains_key(path)
    }

    /// One update of every parameter that has an entry in `grads` (flattened, by path); the
    /// gradients are multiplied by `grad_scale` first (clipping). Others are untouched.
    pub fn step<M: Module>(&mut self, module: M, mut grads: BTreeMap<String, Tensor<1>>, lr: f64, grad_scale: f64) -> M {
        let mut mapper = StepMapper { path: Vec::new(), opt: self, grads: &mut grads, lr, grad_scale };
        module.map(&mut mapper)
    }

    fn update(&mut self, path: &str, p: Tensor<1>, g: Tensor<1>, lr: f64, grad_scale: f64) -> Tensor<1> {
        let c = self.config;
        let decay = if c.weight_decay > 0.0 && self.decayed.contains(path) { lr * c.weight_decay } else { 0.0 };
        let previous = self.state.remove(path);
        let step = previous.as_ref().map_or(1, |s| s.step + 1);
        let k = step_constants(&c, step, lr, decay, grad_scale);
        let (p, m, v) = adamw::update(p, g, previous.map(|s| (s.m, s.v)), &k);
        self.state.insert(path.to_string(), Moments { step, m, v });
        p
    }

    /// Moments (`{path}.exp_avg`, `{path}.exp_avg_sq`, flattened, still on the device) plus per-path step counts, for a checkpoint.
    pub fn export_state(&self) -> (BTreeMap<String, LazyTensor>, BTreeMap<String, u64>) {
        let mut w = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (path, s) in &self.state {
            let shape = vec![s.m.dims()[0]];
            w.insert(format!("{path}.exp_avg"), LazyTensor { shape: shape.clone(), tensor: s.m.clone() });
            w.insert(format!("{path}.exp_avg_sq"), LazyTensor { shape, tensor: s.v.clone() });
            steps.insert(path.clone(), s.step);
        }
        (w, steps)
    }

    /// Restores what [`export_state`](Self::export_state) wrote.
    pub fn import_state(&mut self, mut w: WeightMap, steps: &BTreeMap<String, u64>, device: &Device) -> Result<(), String> {
        let device = device.clone().inner();
        self.state.clear();
        for (path, &step) in steps {
            let mut take = |suffix: &str| -> Result<Tensor<1>, String> {
                let t = w
                    .tensors
                    .remove(&format!("{path}.{suffix}"))
                    .ok_or_else(|| format!("optimizer state lacks `{path}.{suffix}`"))?;
                Ok(t.to_tensor::<1>(&device))
            };
            let m = take("exp_avg")?;
            let v = take("exp_avg_sq")?;
            self.state.insert(path.clone(), Moments { step, m, v });
        }
        if let Some(extra) = w.tensors.keys().next() {
            return Err(format!("optimizer state has `{extra}` without a step count"));
        }
        Ok(())
    }
}

/// The scalars of one parameter's update from the optimizer's settings, PyTorch's formulas.
pub fn step_constants(c: &AdamWConfig, step: u64, lr: f64, decay: f64, grad_scale: f64) -> StepConstants {
    let bc1 = 1.0 - c.beta1.powi(step as i32);
    let bc2 = 1.0 - c.beta2.powi(step as i32);
    StepConstants {
        beta1: c.beta1 as f32,
        beta2: c.beta2 as f32,
        eps: c.eps as f32,
        grad_scale: grad_scale as f32,
        decay_factor: (1.0 - decay) as f32,
        step_size: (lr / bc1) as f32,
        inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
    }
}

struct StepMapper<'a> {
    path: Vec<String>,
    opt: &'a mut AdamW,
    grads: &'a mut BTreeMap<String, Tensor<1>>,
    lr: f64,
    grad_scale: f64,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(grad) = self.grads.remove(&path) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let (autodiff, require_grad) = (tensor.is_autodiff(), tensor.is_require_grad());
        let shape = tensor.shape();
        // `inner()` without a clone leaves the buffer owned once, so it updates in place.
        let flat = tensor.inner().reshape([shape.num_elements()]);
        let updated = self.opt.update(&path, flat, grad.inner(), self.lr, self.grad_scale);
        let updated = as_leaf(updated.reshape::<D, _>(shape), autodiff, require_grad);
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// Global L2 norm of all gradients (one device-to-host read). On the host, one read of
/// each gradient where it lies, summed in f64 (squaring as tensors allocated a copy of
/// every gradient, 1 GB a step for the 270M model, most of it fresh pages).
pub fn global_grad_norm(grads: &BTreeMap<String, Tensor<1>>) -> f64 {
    if grads.values().all(|g| runs_on_host(&g.device())) {
        let sum_sq = |s: &[f32]| -> f64 {
            s.par_chunks(CHUNK).map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sum()
        };
        return grads.values().map(|g| with_host_f32(g.clone(), sum_sq)).sum::<f64>().sqrt();
    }
    let squares: Vec<Tensor<1>> = grads.values().map(|g| g.clone().square().sum()).collect();
    if squares.is_empty() {
        return 0.0;
    }
    let total: f32 = Tensor::cat(squares, 0).sum().into_scalar();
    (total as f64).sqrt()
}

/// The factor that brings `norm` down to `max_norm` (PyTorch's `clip_grad_norm_`), or 1.
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    #[test]
    fn global_norm_reads_every_gradient_where_it_lies() {
        let device = Device::flex();
        let (a, b) = (values(2 * CHUNK + 5, 3), values(300, 9));
        let tensor = |x: &[f32]| Tensor::<1>::from_data(TensorData::new(x.to_vec(), [x.len()]), &device);
        // `b` enters as a view into a larger buffer (offset 100): only its own elements count.
        let mut padded = vec![7.0f32; 100];
        padded.extend(&b);
        padded.extend([7.0f32; 50]);
        let b_view = tensor(&padded).narrow(0, 100, b.len());
        let grads = BTreeMap::from([("a".to_string(), tensor(&a)), ("b".to_string(), b_view)]);
        let expected = a.iter().chain(&b).map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let got = global_grad_norm(&grads);
        assert!((got - expected).abs() < 1e-9 * expected, "{got} vs {expected}");
    }
}
