//! A teacher's top-k logits per token, kept on the host, and a file cache of them.
//!
//! Computing the teacher once and storing `k` (id, logit) pairs per response token costs
//! `8·k` bytes a token instead of `4·V` (1 MiB at Gemma's V = 262144), which is what makes a
//! teacher cache feasible at all.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{file_err, Result};

/// The `k` largest teacher logits (largest first) and their vocabulary ids, for `rows`
/// tokens, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherTopK {
    pub k: usize,
    pub rows: usize,
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

impl TeacherTopK {
    /// Top-k of each row of `teacher_logits` `[N, V]` (detached, copied to the host).
    pub fn from_logits(teacher_logits: Tensor<2>, k: usize) -> Self {
        let [rows, vocab] = teacher_logits.dims();
        assert!(k >= 1 && k <= vocab, "k = {k} must be in 1..={vocab}");
        let (values, ids) = teacher_logits.detach().inner().topk_with_indices(k, 1);
        let logits = values.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        let ids = ids.into_data().iter::<i64>().map(|i| i as u32).collect();
        TeacherTopK { k, rows, ids, logits }
    }

    /// `(ids [N, k], logits [N, k])` on `device`, for [`crate::kd_loss_topk`].
    pub fn tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i64> = self.ids.iter().map(|&i| i as i64).collect();
        (
            Tensor::from_data(TensorData::new(ids, [self.rows, self.k]), device),
            Tensor::from_data(TensorData::new(self.logits.clone(), [self.rows, self.k]), device),
        )
    }

    /// The rows `range` (e.g. one chunk of a chunked loss).
    pub fn slice_rows(&self, range: Range<usize>) -> TeacherTopK {
        assert!(range.end <= self.rows, "rows {range:?} out of {}", self.rows);
        let span = range.start * self.k..range.end * self.k;
        TeacherTopK { k: self.k, rows: range.len(), ids: self.ids[span.clone()].to_vec(), logits: self.logits[span].to_vec() }
    }
}

/// Teacher top-k per example (keyed by any stable id, e.g. the Dolly row index), saved as
/// one safetensors file: `{key}.ids` (u32) and `{key}.logits` (f32), each `[rows, k]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopKCache {
    pub entries: BTreeMap<String, TeacherTopK>,
}

impl TopKCache {
    pub fn insert(&mut self, key: impl Into<String>, value: TeacherTopK) {
        self.entries.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<&TeacherTopK> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut buffers: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = Vec::with_capacity(2 * self.entries.len());
        for (key, t) in &self.entries {
            let shape = vec![t.rows, t.k];
            buffers.push((format!("{key}.ids"), t.ids.iter().flat_map(|x| x.to_le_bytes()).collect(), Dtype::U32, shape.clone()));
            buffers.push((format!("{key}.logits"), t.logits.iter().flat_map(|x| x.to_le_bytes()).collect(), Dtype::F32, shape));
        }
        let views = buffers
            .iter()
            .map(|(name, data, dtype, shape)| {
                TensorView::new(*dtype, shape.clone(), data).map(|v| (name.as_str(), v)).map_err(|e| file_err(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = [("format".to_string(), "sweelol-teacher-topk".to_string())].into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| file_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
    }

    pub fn load(path: &Path) -> Result<TopKCache> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
        let mut cache = TopKCache::default();
        for name in st.names() {
            let Some(key) = name.strip_suffix(".ids") else {
                if !name.ends_with(".logits") {
                    return Err(file_err(path, format!("unexpected tensor `{name}`")));
                }
                continue;
            };
            let ids = st.tensor(name).map_err(|e| file_err(path, e))?;
            let logits = st
                .tensor(&format!("{key}.logits"))
                .map_err(|_| file_err(path, format!("`{key}.ids` has no `{key}.logits`")))?;
            if ids.dtype() != Dtype::U32 || logits.dtype() != Dtype::F32 || ids.shape() != logits.shape() || ids.shape().len() != 2 {
                return Err(file_err(path, format!("`{key}`: expected u32 ids and f32 logits of one [rows, k] shape")));
            }
            let (rows, k) = (ids.shape()[0], ids.shape()[1]);
            let word = |b: &[u8]| -> [u8; 4] { b.try_into().expect("4 bytes") };
            cache.insert(
                key,
                TeacherTopK {
                    k,
                    rows,
                    ids: ids.data().chunks_exact(4).map(|b| u32::from_le_bytes(word(b))).collect(),
                    logits: logits.data().chunks_exact(4).map(|b| f32::from_le_bytes(word(b))).collect(),
                },
            );
        }
        Ok(cache)
    }
}
