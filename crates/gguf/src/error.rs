//! The crate's error type.
//!
//! Every variant carries the file path plus the place that failed (byte offset, metadata key or
//! tensor name), because a bare "unexpected end of file" is useless when several models are
//! loaded side by side.

use std::path::PathBuf;

use crate::GgmlType;

/// Anything that can go wrong reading a GGUF file. Bad input never panics; it ends up here.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, inspected or memory-mapped.
    #[error("{}: cannot read GGUF file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file ends before a structure that the header promises.
    #[error(
        "{}: truncated GGUF file: {what} needs {needed} bytes at byte offset {offset}, but the file is only {file_len} bytes",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    /// The first four bytes are not `GGUF` (`found` holds them, ASCII-escaped).
    #[error("{}: not a GGUF file: it starts with \"{found}\", expected \"GGUF\"", path.display())]
    BadMagic { path: PathBuf, found: String },

    /// A GGUF version this reader does not understand (v1 used 32-bit counts; big-endian files
    /// show up as a byte-swapped version number).
    #[error(
        "{}: unsupported GGUF version {version} at byte offset 4 (this reader supports versions 2 and 3, little-endian)",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// A structural problem in the header: invalid value type, invalid UTF-8, absurd counts,
    /// duplicate names, bad alignment and the like.
    #[error("{}: malformed GGUF at byte offset {offset}: {detail}", path.display())]
    Malformed {
        path: PathBuf,
        offset: u64,
        detail: String,
    },

    /// A tensor uses a ggml type id this reader has never heard of, so its size is unknowable.
    #[error(
        "{}: tensor '{tensor}' has unknown ggml type id {type_id} (tensor info at byte offset {offset})",
        path.display()
    )]
    UnknownGgmlType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
        offset: u64,
    },

    /// The type is known (the file parses) but there is no dequantizer for it.
    #[error("{}: tensor '{tensor}': dequantizing ggml type {ggml_type} is not supported", path.display())]
    UnsupportedGgmlType {
        path: PathBuf,
        tensor: String,
        ggml_type: GgmlType,
    },

    /// Dimensions that cannot describe a valid tensor of the stated type.
    #[error("{}: tensor '{tensor}': bad shape: {detail}", path.display())]
    BadTensorShape {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    /// The tensor's bytes would lie (partly) beyond the end of the file.
    #[error(
        "{}: tensor '{tensor}': data at byte offsets {start}..{end} lies past the end of the file ({file_len} bytes)",
        path.display()
    )]
    TensorDataPastEof {
        path: PathBuf,
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    /// No tensor of that name.
    #[error("{}: no tensor named '{tensor}'", path.display())]
    TensorNotFound { path: PathBuf, tensor: String },

    /// A required metadata key is absent.
    #[error("{}: metadata key '{key}' is missing", path.display())]
    MissingKey { path: PathBuf, key: String },

    /// A metadata key holds a different type than the caller needs.
    #[error("{}: metadata key '{key}' holds {found}, expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    /// The vocabulary metadata cannot be turned into a tokenizer.
    #[error("{}: cannot build tokenizer from '{key}': {detail}", path.display())]
    Tokenizer {
        path: PathBuf,
        key: String,
        detail: String,
    },
}
