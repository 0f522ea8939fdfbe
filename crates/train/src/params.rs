//! A module's float parameters addressed by path (`layers.3.mlp.up_proj.weight`).
//!
//! burn identifies parameters by random `ParamId`s, which change whenever a model is loaded
//! again; paths do not. Optimizer state, checkpoints and trainability are therefore keyed by
//! path. Callbacks see parameters flattened to `Tensor<1>`, so one closure serves every rank.

use std::collections::{BTreeMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor, TensorData};
use sweelol_gemma::{HostTensor, LazyTensor};

/// A parameter as seen from outside.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub path: String,
    pub shape: Vec<usize>,
    /// Whether backward will produce a gradient for it.
    pub requires_grad: bool,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Tracks the module path while a visitor or mapper walks a module.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn current(&self) -> String {
        self.0.join(".")
    }
}

/// Calls `f(path, tensor)` for every float parameter, in module order.
pub fn visit_params<M: Module>(module: &M, f: impl FnMut(&str, Tensor<1>, &[usize], bool)) {
    struct V<F> {
        path: PathStack,
        f: F,
    }
    impl<F: FnMut(&str, Tensor<1>, &[usize], bool)> ModuleVisitor for V<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let dims = t.dims();
            let rg = t.is_require_grad();
            let n = dims.iter().product::<usize>();
            (self.f)(&self.path.current(), t.reshape([n]), &dims, rg);
        }
    }
    module.visit(&mut V { path: PathStack::default(), f });
}

/// Every float parameter with its shape and gradient setting.
pub fn param_infos<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut out = Vec::new();
    visit_params(module, |path, _, shape, rg| {
        out.push(ParamInfo { path: path.to_string(), shape: shape.to_vec(), requires_grad: rg })
    });
    out
}

/// Replaces parameters: `f(path, flat)` returns the new flat value or `None` to keep it.
///
/// The new value must be graph-free (plain or detached); it is put back on the parameter's
/// device as a fresh leaf with the parameter's gradient setting, so it trains like before.
pub fn map_params<M: Module>(module: M, f: impl FnMut(&str, Tensor<1>) -> Option<Tensor<1>>) -> M {
    struct Mp<F> {
        path: PathStack,
        f: F,
    }
    impl<F: FnMut(&str, Tensor<1>) -> Option<Tensor<1>>> ModuleMapper for Mp<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let n = shape.num_elements();
            match (self.f)(&self.path.current(), tensor.clone().reshape([n])) {
                None => Param::from_mapped_value(id, tensor, mapper),
                Some(new) => {
                    let new = as_leaf_like(&tensor, new.reshape::<D, _>(shape));
                    Param::from_mapped_value(id, new, mapper)
                }
            }
        }
    }
    module.map(&mut Mp { path: PathStack::default(), f })
}

/// `new` (graph-free) as a leaf with `like`'s autodiff association and gradient setting.
pub(crate) fn as_leaf_like<const D: usize>(like: &Tensor<D>, new: Tensor<D>) -> Tensor<D> {
    as_leaf(new, like.is_autodiff(), like.is_require_grad())
}

/// `new` (graph-free) as a leaf on the autodiff device if `autodiff`, tracking gradients if
/// `require_grad`.
pub(crate) fn as_leaf<const D: usize>(new: Tensor<D>, autodiff: bool, require_grad: bool) -> Tensor<D> {
    let new = new.inner();
    if autodiff {
        let leaf = Tensor::from_inner(new);
        if require_grad {
            leaf.require_grad()
        } else {
            leaf
        }
    } else {
        new
    }
}

/// Turns gradient tracking on for parameters whose path satisfies `trainable`, off for the
/// rest. A frozen parameter gets no gradient, hence no optimizer state and no update.
pub fn set_trainable<M: Module>(module: M, trainable: impl Fn(&str) -> bool) -> M {
    struct Mp<F> {
        path: PathStack,
        f: F,
    }
    impl<F: Fn(&str) -> bool> ModuleMapper for Mp<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let on = (self.f)(&self.path.current());
            param.set_require_grad(on)
        }
    }
    module.map(&mut Mp { path: PathStack::default(), f: trainable })
}

/// Copies the parameters selected by `keep` to the host, keyed by path.
pub fn to_host<M: Module>(module: &M, keep: impl Fn(&str) -> bool) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    visit_params(module, |path, flat, shape, _| {
        if keep(path) {
            let data = flat.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 parameter");
            out.insert(path.to_string(), HostTensor::new(shape.to_vec(), data));
        }
    });
    out
}

/// The parameters selected by `keep`, keyed by path, still on their device (for writing a
/// checkpoint one tensor at a time).
pub fn to_lazy<M: Module>(module: &M, keep: impl Fn(&str) -> bool) -> BTreeMap<String, LazyTensor> {
    let mut out = BTreeMap::new();
    visit_params(module, |path, flat, shape, _| {
        if keep(path) {
            out.insert(path.to_string(), LazyTensor { shape: shape.to_vec(), tensor: flat });
        }
    });
    out
}

/// Loads host tensors into the parameters with the same paths. Every entry of `state` must
/// match a parameter of the same shape; parameters absent from `state` are left alone.
pub fn load_host<M: Module>(module: M, state: &BTreeMap<String, HostTensor>) -> Result<M, String> {
    let shapes: BTreeMap<String, Vec<usize>> =
        param_infos(&module).into_iter().map(|p| (p.path, p.shape)).collect();
    for (path, t) in state {
        match shapes.get(path) {
            None => return Err(format!("tensor `{path}` matches no parameter of the model")),
            Some(s) if *s != t.shape => {
                return Err(format!("tensor `{path}` has shape {:?}, the parameter {:?}", t.shape, s))
            }
            _ => {}
        }
    }
    Ok(map_params(module, |path, flat| {
        state.get(path).map(|t| {
            Tensor::from_data(TensorData::new(t.data.clone(), [t.data.len()]), &flat.device().inner())
        })
    }))
}

/// Takes the gradients of `module`'s parameters out of `grads`, flattened and keyed by path.
/// Parameters that did not take part in the graph (or are frozen) have no entry.
pub fn grads_by_path<M: Module>(module: &M, grads: &mut Gradients) -> BTreeMap<String, Tensor<1>> {
    grads_by_path_plus(module, grads, None)
}

/// [`grads_by_path`], with `extra` (a parameter's id and its gradient computed outside the
/// graph, flattened, on the plain device) added to that parameter's entry.
pub fn grads_by_path_plus<M: Module>(module: &M, grads: &mut Gradients, extra: Option<(ParamId, Tensor<1>)>) -> BTreeMap<String, Tensor<1>> {
    struct V<'a> {
        path: PathStack,
        grads: &'a mut Gradients,
        extra: Option<(ParamId, Tensor<1>)>,
        out: BTreeMap<String, Tensor<1>>,
    }
    impl ModuleVisitor for V<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // The lookup needs the leaf itself (a reshaped view is another graph node).
            let leaf = param.val();
            let n = leaf.shape().num_elements();
            let mut g = leaf.grad_remove(self.grads).map(|g| g.reshape([n]));
            if self.extra.as_ref().is_some_and(|(id, _)| *id == param.id) {
                let (_, e) = self.extra.take().expect("checked");
                g = Some(match g {
                    Some(g) => g + e,
                    None => e,
                });
            }
            if let Some(g) = g {
                self.out.insert(self.path.current(), g);
            }
        }
    }
    let mut v = V { path: PathStack::default(), grads, extra, out: BTreeMap::new() };
    module.visit(&mut v);
    v.out
}

/// The path of the parameter `id` in `module`, if it has one.
pub fn path_of<M: Module>(module: &M, id: ParamId) -> Option<String> {
    struct V {
        path: PathStack,
        id: ParamId,
        found: Option<String>,
    }
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.id == self.id {
                self.found = Some(self.path.current());
            }
        }
    }
    let mut v = V { path: PathStack::default(), id, found: None };
    module.visit(&mut v);
    v.found
}

/// Paths of the parameters `pred` selects, for building masks and sets once.
pub fn select_paths<M: Module>(module: &M, pred: impl Fn(&ParamInfo) -> bool) -> HashSet<String> {
    param_infos(module).into_iter().filter(|p| pred(p)).map(|p| p.path).collect()
}
