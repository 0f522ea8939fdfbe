//! Backend selection for sweelol.
//!
//! burn 0.22 dispatches on a runtime [`Device`]: every tensor carries the device that
//! decides which backend runs it. This crate is the single place that turns a user's
//! `--backend` string into such a device; every other crate just takes `&Device`.

mod jit_cache;

pub use jit_cache::{persist_jit_caches, user_jit_config};

use std::fmt;
use std::str::FromStr;

pub use burn::tensor::Device;

/// The backends sweelol can run on. Which ones exist depends on cargo features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend; always available, needs no setup.
    #[default]
    Flex,
    /// libtorch on the CPU (feature `tch`, needs libtorch 2.9.0).
    LibTorchCpu,
    /// libtorch on a CUDA device (feature `tch`).
    LibTorchCuda(usize),
    /// wgpu on the default adapter: Vulkan, Metal or DX12 (feature `wgpu`).
    Wgpu,
}

/// Error for an unknown or not-compiled-in backend name.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend `{0}`; expected one of: flex, tch, tch-cuda[:N], wgpu")]
    Unknown(String),
    #[error("backend `{name}` needs the cargo feature `{feature}` (rebuild with --features {feature})")]
    NotCompiled { name: String, feature: &'static str },
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let kind = match lower.as_str() {
            "flex" | "cpu" => BackendKind::Flex,
            "tch" | "libtorch" | "tch-cpu" => BackendKind::LibTorchCpu,
            "tch-cuda" | "cuda" => BackendKind::LibTorchCuda(0),
            "wgpu" | "vulkan" => BackendKind::Wgpu,
            other => match other.strip_prefix("tch-cuda:").or_else(|| other.strip_prefix("cuda:")) {
                Some(index) => BackendKind::LibTorchCuda(
                    index.parse().map_err(|_| BackendError::Unknown(s.to_string()))?,
                ),
                None => return Err(BackendError::Unknown(s.to_string())),
            },
        };
        kind.check_compiled()?;
        Ok(kind)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::Flex => write!(f, "flex"),
            BackendKind::LibTorchCpu => write!(f, "tch"),
            BackendKind::LibTorchCuda(i) => write!(f, "tch-cuda:{i}"),
            BackendKind::Wgpu => write!(f, "wgpu"),
        }
    }
}

impl BackendKind {
    fn check_compiled(&self) -> Result<(), BackendError> {
        let missing = |feature| {
            Err(BackendError::NotCompiled {
                name: self.to_string(),
                feature,
            })
        };
        match self {
            BackendKind::Flex => Ok(()),
            BackendKind::LibTorchCpu | BackendKind::LibTorchCuda(_) if !cfg!(feature = "tch") => {
                missing("tch")
            }
            BackendKind::Wgpu if !cfg!(feature = "wgpu") => missing("wgpu"),
            _ => Ok(()),
        }
    }

    /// The inference device for this backend.
    pub fn device(&self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[cfg(feature = "tch")]
            BackendKind::LibTorchCpu => Device::libtorch(),
            #[cfg(feature = "tch")]
            BackendKind::LibTorchCuda(i) => Device::libtorch_cuda(*i),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Device::wgpu(Default::default()),
            #[allow(unreachable_patterns)]
            other => unreachable!("backend {other} was validated as compiled in"),
        }
    }

    /// The same device with automatic differentiation, for training.
    pub fn autodiff_device(&self) -> Device {
        self.device().autodiff()
    }

    /// Names of the backends compiled into this binary.
    pub fn available() -> Vec<&'static str> {
        let mut names = vec!["flex"];
        if cfg!(feature = "tch") {
            names.extend(["tch", "tch-cuda[:N]"]);
        }
        if cfg!(feature = "wgpu") {
            names.push("wgpu");
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("flex".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        assert_eq!("CPU".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        assert!(matches!("tpu".parse::<BackendKind>(), Err(BackendError::Unknown(_))));
        let cuda = "tch-cuda:1".parse::<BackendKind>();
        if cfg!(feature = "tch") {
            assert_eq!(cuda.unwrap(), BackendKind::LibTorchCuda(1));
        } else {
            assert!(matches!(cuda, Err(BackendError::NotCompiled { feature: "tch", .. })));
        }
    }
}
