//! sweelol-gguf: a reader for llama.cpp's GGUF model files (versions 2 and 3).
//!
//! The file is memory-mapped; only the header is parsed up front. Tensors are decoded to f32 on
//! request, and [`GgufFile::tokenizer`] rebuilds a Hugging Face `tokenizers` tokenizer from the
//! SentencePiece vocabulary stored in the metadata.
//!
//! Shapes are reported row-major (GGUF's `ne` list reversed), so a GGUF matrix with
//! `ne = [640, 262144]` is `[262144, 640]`: 262144 rows of 640 contiguous values.

mod dequant;
mod error;
mod reader;
mod tokenizer;
mod types;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use types::GgmlType;
pub use value::MetaValue;

/// Where one tensor lives in the file and how to interpret it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape: GGUF's `ne` reversed (the last entry is the contiguous dimension).
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the tensor's data in the file (data section start plus the
    /// offset recorded in the tensor info).
    pub offset: u64,
    /// Number of elements (product of `shape`).
    pub n_elements: usize,
    /// Number of bytes of encoded data.
    pub n_bytes: usize,
}

/// An open GGUF file: the memory map plus the parsed header.
pub struct GgufFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

// Model loaders decode tensors from several threads at once.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
};

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and maps `path`, parses the header and checks that every tensor's data lies
    /// within the file, so later tensor reads cannot run off the end.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only and model files are not modified while in use; a
        // concurrent truncation by another process is outside what we can defend against.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let header = reader::parse(path, &mmap)?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::TensorNotFound {
                path: self.path.clone(),
                tensor: name.to_owned(),
            })
    }

    /// The raw encoded bytes of tensor `name` (bounds were checked in [`GgufFile::open`]).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let t = self.tensor_info(name)?;
        let start = t.offset as usize;
        Ok(&self.mmap[start..start + t.n_bytes])
    }

    /// Tensor `name` decoded to f32, with its row-major shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let t = self.tensor_info(name)?;
        let f = dequant::block_fn(t.ggml_type).ok_or_else(|| GgufError::UnsupportedGgmlType {
            path: self.path.clone(),
            tensor: name.to_owned(),
            ggml_type: t.ggml_type,
        })?;
        let mut out = vec![0f32; t.n_elements];
        dequant::dequantize(t.ggml_type, f, self.tensor_bytes(name)?, &mut out);
        Ok((t.shape.clone(), out))
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            found: found.type_name(),
        }
    }

    /// An integer key as `u64` (any integer width is accepted if the value fits).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// An integer key as `u32` (any integer width is accepted if the value fits).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.get(key)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.wrong_type(key, "an integer in u32 range", v))
    }

    /// An integer key as `usize`, the usual need for dimensions and counts.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key)?;
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| self.wrong_type(key, "an integer in usize range", v))
    }

    /// A float key (stored as f32 or f64).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.get(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| self.wrong_type(key, "a float", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.get(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    /// An array key whose elements are all strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|items| items.iter().map(MetaValue::as_str).collect())
            .ok_or_else(|| self.wrong_type(key, "an array of strings", v))
    }

    /// An array key whose elements are all floats.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|items| items.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
            .ok_or_else(|| self.wrong_type(key, "an array of floats", v))
    }

    /// An array key whose elements are all integers in i64 range.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|items| items.iter().map(MetaValue::as_i64).collect())
            .ok_or_else(|| self.wrong_type(key, "an array of integers", v))
    }

    /// `general.architecture`, which prefixes the model's hyper-parameter keys.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }
}
