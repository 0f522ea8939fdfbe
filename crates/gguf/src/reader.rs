//! Parsing of the GGUF header (metadata key/values and tensor infos) from the mapped bytes.
//!
//! Layout (all little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata entries, the tensor infos, padding to `general.alignment` (default 32), then the
//! tensor data section that tensor offsets are relative to.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::{GgmlType, GgufError, MetaValue, TensorInfo};

/// Alignment of the data section and of every tensor when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but nothing real nests deeply; the cap keeps a hostile file from
/// overflowing the stack.
const MAX_ARRAY_DEPTH: u32 = 8;

/// The parsed header.
pub(crate) struct Header {
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian reader over the file bytes. Every read names what it was
/// reading so that a truncation error says where it happened.
struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.data.len() as u64,
            });
        }
        let n = n as usize;
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.malformed(start, format!("{} is not valid UTF-8: {e}", what()))),
        }
    }

    fn malformed(&self, offset: usize, detail: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            offset: offset as u64,
            detail,
        }
    }

    /// Reads one value of GGUF value type `ty` belonging to metadata key `key`.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let what = || format!("value of metadata key '{key}'");
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(&what)?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => {
                        return Err(self.malformed(
                            at,
                            format!("metadata key '{key}': bool byte is {b}, expected 0 or 1"),
                        ))
                    }
                }
            }
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(
                        at,
                        format!(
                            "metadata key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
                        ),
                    ));
                }
                let elem_ty =
                    self.u32(&|| format!("element type of array for metadata key '{key}'"))?;
                let Some(min_size) = min_value_size(elem_ty) else {
                    return Err(self.malformed(at, format!("metadata key '{key}': array element type {elem_ty} is not a GGUF value type")));
                };
                let count = self.u64(&|| format!("length of array for metadata key '{key}'"))?;
                // Check that the elements can possibly fit before allocating for them.
                let remaining = (self.data.len() - self.pos) as u64;
                if count.saturating_mul(min_size) > remaining {
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: format!("{count} array elements of metadata key '{key}'"),
                        offset: self.pos as u64,
                        needed: count.saturating_mul(min_size),
                        file_len: self.data.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(self.malformed(
                    self.pos.saturating_sub(4),
                    format!("metadata key '{key}' has unknown value type {other}"),
                ))
            }
        })
    }
}

/// The smallest encoding of a value of type `ty`, or `None` if `ty` is not a value type.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

/// Parses the header of the GGUF file `path` whose bytes are `data`, and validates that every
/// tensor's data lies inside the file.
pub(crate) fn parse(path: &Path, data: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { path, data, pos: 0 };
    let magic = c
        .take(4, &|| "magic".into())
        .map_err(|_| GgufError::BadMagic {
            path: path.to_path_buf(),
            found: data.escape_ascii().to_string(),
        })?;
    if magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: magic.escape_ascii().to_string(),
        });
    }
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let at = c.pos;
        let key = c.string(&|| format!("key of metadata entry #{i}"))?;
        let ty = c.u32(&|| format!("value type of metadata key '{key}'"))?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(c.malformed(at, format!("metadata key '{key}' appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(c.malformed(
                    c.pos,
                    format!("metadata key 'general.alignment' is {v:?}, expected a power of two"),
                ))
            }
        },
    };

    // Tensor infos: name, n_dims, ne[n_dims] (fastest-varying first), type id, data offset.
    struct RawInfo {
        at: usize,
        name: String,
        ne: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
    }
    let mut raw = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n_tensors {
        let at = c.pos;
        let name = c.string(&|| format!("name of tensor info #{i}"))?;
        let n_dims = c.u32(&|| format!("dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(c.malformed(
                at,
                format!("tensor '{name}' has {n_dims} dimensions, ggml allows at most {MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            ne.push(c.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_at = c.pos;
        let type_id = c.u32(&|| format!("type of tensor '{name}'"))?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownGgmlType {
                path: path.to_path_buf(),
                tensor: name,
                type_id,
                offset: type_at as u64,
            });
        };
        let offset = c.u64(&|| format!("data offset of tensor '{name}'"))?;
        if !seen.insert(name.clone()) {
            return Err(c.malformed(at, format!("tensor name '{name}' appears twice")));
        }
        raw.push(RawInfo {
            at,
            name,
            ne,
            ggml_type,
            offset,
        });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = data.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    for r in raw {
        let bad_shape = |detail: String| GgufError::BadTensorShape {
            path: path.to_path_buf(),
            tensor: r.name.clone(),
            detail,
        };
        let n_elements =
            r.ne.iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| usize::try_from(n).is_ok())
                .ok_or_else(|| {
                    bad_shape(format!("element count of dimensions {:?} overflows", r.ne))
                })?;
        let block = r.ggml_type.block_size() as u64;
        let ne0 = r.ne.first().copied().unwrap_or(1);
        if ne0 % block != 0 {
            return Err(bad_shape(format!(
                "innermost dimension {ne0} (dimensions {:?}) is not a multiple of the {} block size {block}",
                r.ne, r.ggml_type
            )));
        }
        let n_bytes = (n_elements / block)
            .checked_mul(r.ggml_type.type_size() as u64)
            .ok_or_else(|| bad_shape(format!("byte size of dimensions {:?} overflows", r.ne)))?;
        if r.offset % alignment != 0 {
            return Err(c.malformed(
                r.at,
                format!("tensor '{}' has data offset {} that is not a multiple of the alignment {alignment}", r.name, r.offset),
            ));
        }
        let start = data_start.checked_add(r.offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                shape: r.ne.iter().rev().map(|&d| d as usize).collect(),
                name: r.name,
                ggml_type: r.ggml_type,
                offset: start,
                n_elements: n_elements as usize,
                n_bytes: n_bytes as usize,
            }),
            _ => {
                return Err(GgufError::TensorDataPastEof {
                    path: path.to_path_buf(),
                    tensor: r.name,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    Ok(Header { metadata, tensors })
}
