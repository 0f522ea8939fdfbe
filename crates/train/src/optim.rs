//! AdamW with decoupled weight decay on matrices only, global-norm clipping, and state
//! keyed by parameter path so it survives reloading the model.
//!
//! burn's `ModuleOptimizer` keys its state by `ParamId`, which is random per load, and clips
//! per parameter; a checkpoint must resume into a freshly loaded model and clipping must be
//! global, so this optimizer is our own. The update is PyTorch's `torch.optim.AdamW`:
//! `p ← p·(1 − lr·wd)` (if decayed), `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)`.

use std::collections::{BTreeMap, HashMap, HashSet};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use sweelol_gemma::{HostTensor, WeightMap};

use crate::params::as_leaf_like;

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
        let g = if grad_scale != 1.0 { g * grad_scale } else { g };
        let p = if c.weight_decay > 0.0 && self.decayed.contains(path) { p * (1.0 - lr * c.weight_decay) } else { p };
        let s = match self.state.remove(path) {
            Some(s) => Moments {
                step: s.step + 1,
                m: s.m * c.beta1 + g.clone() * (1.0 - c.beta1),
                v: s.v * c.beta2 + g.clone() * g * (1.0 - c.beta2),
            },
            None => Moments { step: 1, m: g.clone() * (1.0 - c.beta1), v: g.clone() * g * (1.0 - c.beta2) },
        };
        let bc1 = 1.0 - c.beta1.powi(s.step as i32);
        let bc2 = 1.0 - c.beta2.powi(s.step as i32);
        let denom = s.v.clone().sqrt() * (1.0 / bc2.sqrt()) + c.eps;
        let p = p - s.m.clone() * (lr / bc1) / denom;
        self.state.insert(path.to_string(), s);
        p
    }

    /// Moments as host tensors (`{path}.exp_avg`, `{path}.exp_avg_sq`) plus per-path step
    /// counts, for a checkpoint.
    pub fn export_state(&self) -> (WeightMap, BTreeMap<String, u64>) {
        let mut w = WeightMap::new("<optimizer>");
        let mut steps = BTreeMap::new();
        for (path, s) in &self.state {
            w.insert(format!("{path}.exp_avg"), HostTensor::from_tensor(s.m.clone()));
            w.insert(format!("{path}.exp_avg_sq"), HostTensor::from_tensor(s.v.clone()));
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
        let shape = tensor.shape();
        let flat = tensor.clone().inner().reshape([shape.num_elements()]);
        let updated = self.opt.update(&path, flat, grad.inner(), self.lr, self.grad_scale);
        let updated = as_leaf_like(&tensor, updated.reshape::<D, _>(shape));
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// Global L2 norm of all gradients (one device-to-host read).
pub fn global_grad_norm(grads: &BTreeMap<String, Tensor<1>>) -> f64 {
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
