//! Shared test helpers: a writer for small synthetic GGUF files, scratch files, and the
//! locations of the real model and the shared data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Builds GGUF bytes. Values are given pre-encoded with their GGUF value type id.
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: usize,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn array_bytes(elem_type: u32, items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = elem_type.to_le_bytes().to_vec();
    v.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for it in items {
        v.extend_from_slice(it);
    }
    v
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn raw_kv(mut self, key: &str, ty: u32, value: Vec<u8>) -> Self {
        self.kvs.push((key.to_owned(), ty, value));
        self
    }
    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.raw_kv(key, 4, v.to_le_bytes().to_vec())
    }
    pub fn kv_i32(self, key: &str, v: i32) -> Self {
        self.raw_kv(key, 5, v.to_le_bytes().to_vec())
    }
    pub fn kv_u64(self, key: &str, v: u64) -> Self {
        self.raw_kv(key, 10, v.to_le_bytes().to_vec())
    }
    pub fn kv_f32(self, key: &str, v: f32) -> Self {
        self.raw_kv(key, 6, v.to_le_bytes().to_vec())
    }
    pub fn kv_f64(self, key: &str, v: f64) -> Self {
        self.raw_kv(key, 12, v.to_le_bytes().to_vec())
    }
    pub fn kv_bool(self, key: &str, v: bool) -> Self {
        self.raw_kv(key, 7, vec![v as u8])
    }
    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.raw_kv(key, 8, string_bytes(v))
    }
    pub fn kv_str_array(self, key: &str, v: &[&str]) -> Self {
        let items: Vec<Vec<u8>> = v.iter().map(|s| string_bytes(s)).collect();
        self.raw_kv(key, 9, array_bytes(8, &items))
    }
    pub fn kv_f32_array(self, key: &str, v: &[f32]) -> Self {
        let items: Vec<Vec<u8>> = v.iter().map(|x| x.to_le_bytes().to_vec()).collect();
        self.raw_kv(key, 9, array_bytes(6, &items))
    }
    pub fn kv_i32_array(self, key: &str, v: &[i32]) -> Self {
        let items: Vec<Vec<u8>> = v.iter().map(|x| x.to_le_bytes().to_vec()).collect();
        self.raw_kv(key, 9, array_bytes(5, &items))
    }
    /// An array of arrays of u8, to exercise nesting.
    pub fn kv_nested(self, key: &str, v: &[&[u8]]) -> Self {
        let items: Vec<Vec<u8>> = v
            .iter()
            .map(|inner| {
                let elems: Vec<Vec<u8>> = inner.iter().map(|b| vec![*b]).collect();
                array_bytes(0, &elems)
            })
            .collect();
        self.raw_kv(key, 9, array_bytes(9, &items))
    }

    /// Adds a tensor with GGUF dimensions `ne` (fastest-varying first), type id and raw data.
    pub fn tensor(mut self, name: &str, ne: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_owned(), ne.to_vec(), type_id, data));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kvs {
            out.extend_from_slice(&string_bytes(k));
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(v);
        }
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0usize;
        for (name, ne, ty, data) in &self.tensors {
            out.extend_from_slice(&string_bytes(name));
            out.extend_from_slice(&(ne.len() as u32).to_le_bytes());
            for d in ne {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + data.len());
        }
        out.resize(align(out.len()), 0);
        let data_start = out.len();
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(data_start + align(out.len() - data_start), 0);
        }
        out
    }
}

/// A file in the temp directory, removed on drop. Its name starts with `tag` so error
/// messages can be checked for the path.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tid = format!("{:?}", std::thread::current().id())
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let path =
            std::env::temp_dir().join(format!("{tag}-{}-{tid}-{nanos}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The real Gemma 3 270M Q4_K_M GGUF: `$SWEELOL_GGUF`, else the cached copy, fetched (once per
/// machine) through sweelol-sources if it is not there yet.
pub fn real_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("SWEELOL_GGUF").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    match sweelol_sources::resolve(sweelol_sources::GEMMA3_270M_GGUF) {
        Ok(sweelol_sources::ModelFiles::Gguf { path, .. }) => path,
        Ok(other) => panic!("unexpected resolution {other:?}"),
        Err(e) => panic!("cannot obtain the real GGUF: {e}"),
    }
}

/// The project's read-only shared data (`../shared` relative to the workspace root).
pub fn shared() -> PathBuf {
    sweelol_fixtures::shared_dir()
}

/// Reads a gzip file to a string.
pub fn gunzip(path: &Path) -> String {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut s)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s
}
