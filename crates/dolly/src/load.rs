use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DollyError, Place};
use sweelol_records::py_strip;

/// The eight categories of databricks-dolly-15k; anything else means a wrong or corrupted file.
pub const CATEGORIES: [&str; 8] = [
    "brainstorming",
    "classification",
    "closed_qa",
    "creative_writing",
    "general_qa",
    "information_extraction",
    "open_qa",
    "summarization",
];

const FIELDS: [&str; 4] = ["instruction", "context", "response", "category"];

/// One Dolly row. `context` may be empty; the other fields are validated non-empty on load.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DollyRecord {
    pub instruction: String,
    pub context: String,
    pub response: String,
    pub category: String,
}

/// Loads Dolly from `.jsonl`, `.jsonl.gz` or `.parquet` (chosen by extension), validating every row.
///
/// A row is rejected (with file and 1-based line / 0-based row) when a field is missing or not a
/// string, `instruction` or `response` is empty or whitespace only (the chat template trims it to
/// nothing), or `category` is not one of [`CATEGORIES`]. Extra fields are ignored. In JSON Lines a
/// final newline is fine but a blank line in the middle is an error.
pub fn load(path: &Path) -> Result<Vec<DollyRecord>, DollyError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let open = || File::open(path).map_err(|source| io_err(path, source));
    if name.ends_with(".jsonl.gz") {
        let reader = BufReader::new(flate2::read::MultiGzDecoder::new(open()?));
        read_jsonl(path, reader)
    } else if name.ends_with(".jsonl") {
        read_jsonl(path, BufReader::new(open()?))
    } else if name.ends_with(".parquet") {
        read_parquet(path, open()?)
    } else {
        Err(DollyError::file(
            path,
            "unsupported file type; expected .jsonl, .jsonl.gz or .parquet",
        ))
    }
}

/// Number of records per category, in name order.
pub fn category_counts(records: &[DollyRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.category.clone()).or_insert(0) += 1;
    }
    counts
}

fn io_err(path: &Path, source: std::io::Error) -> DollyError {
    DollyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_jsonl<R: Read>(
    path: &Path,
    mut reader: BufReader<R>,
) -> Result<Vec<DollyRecord>, DollyError> {
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        line_no += 1;
        let place = Place::Line(line_no);
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DollyError::record(path, place, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| DollyError::record(path, place, format!("not valid UTF-8: {e}")))?;
        if line.trim().is_empty() {
            return Err(DollyError::record(path, place, "empty line"));
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| DollyError::record(path, place, format!("invalid JSON: {e}")))?;
        let record = record_from_json(&value).map_err(|m| DollyError::record(path, place, m))?;
        records.push(record);
    }
    Ok(records)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn record_from_json(value: &Value) -> Result<DollyRecord, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", json_kind(value)))?;
    let mut fields: [String; 4] = Default::default();
    for (slot, name) in fields.iter_mut().zip(FIELDS) {
        match obj.get(name) {
            None => return Err(format!("missing field `{name}`")),
            Some(Value::String(s)) => *slot = s.clone(),
            Some(other) => {
                return Err(format!(
                    "field `{name}` must be a string, found {}",
                    json_kind(other)
                ))
            }
        }
    }
    let [instruction, context, response, category] = fields;
    validated(DollyRecord {
        instruction,
        context,
        response,
        category,
    })
}

fn validated(r: DollyRecord) -> Result<DollyRecord, String> {
    if py_strip(&r.instruction).is_empty() {
        return Err("field `instruction` is empty".into());
    }
    if py_strip(&r.response).is_empty() {
        return Err("field `response` is empty".into());
    }
    if !CATEGORIES.contains(&r.category.as_str()) {
        return Err(format!(
            "field `category` has unknown value {:?} (expected one of {})",
            r.category,
            CATEGORIES.join(", ")
        ));
    }
    Ok(r)
}

fn read_parquet(path: &Path, file: File) -> Result<Vec<DollyRecord>, DollyError> {
    let perr = |e: parquet::errors::ParquetError| DollyError::file(path, format!("parquet: {e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(perr)?
        .build()
        .map_err(perr)?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| DollyError::file(path, format!("parquet: {e}")))?;
        let cols = FIELDS
            .iter()
            .map(|name| string_column(path, &batch, name))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            let place = Place::Row(records.len());
            let mut fields: [String; 4] = Default::default();
            for ((slot, col), name) in fields.iter_mut().zip(&cols).zip(FIELDS) {
                if col.is_null(i) {
                    return Err(DollyError::record(
                        path,
                        place,
                        format!("field `{name}` is null"),
                    ));
                }
                *slot = col.value(i).to_owned();
            }
            let [instruction, context, response, category] = fields;
            let record = validated(DollyRecord {
                instruction,
                context,
                response,
                category,
            })
            .map_err(|m| DollyError::record(path, place, m))?;
            records.push(record);
        }
    }
    Ok(records)
}

/// The column `name` as UTF-8 strings; only string-typed columns are accepted (no silent casts).
fn string_column(path: &Path, batch: &RecordBatch, name: &str) -> Result<StringArray, DollyError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| DollyError::file(path, format!("missing column `{name}`")))?;
    match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {}
        other => {
            return Err(DollyError::file(
                path,
                format!("column `{name}` has type {other}, expected a string type"),
            ))
        }
    }
    let cast = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| DollyError::file(path, format!("column `{name}`: {e}")))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DollyError::file(path, format!("column `{name}`: not a string array")))
}
