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
use crate::schema::{record_from_json, DataFormat, Turn};

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

/// One instruction example: a Dolly row, or an Alpaca row or conversation read into the same
/// shape (`schema.rs`). `context` may be empty, and `category` too outside Dolly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DollyRecord {
    pub instruction: String,
    pub context: String,
    pub response: String,
    pub category: String,
    /// A conversation's turns before its last exchange (a system turn, then user and
    /// assistant turns); empty for Dolly and Alpaca rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Turn>,
}

/// A data file's records and their format.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub records: Vec<DollyRecord>,
    pub format: DataFormat,
    /// The format came from the first record, not from the caller.
    pub detected: bool,
}

/// Loads Dolly from `.jsonl`, `.jsonl.gz` or `.parquet` (chosen by extension), validating every row.
///
/// A row is rejected (with file and 1-based line / 0-based row) when a field is missing or not a
/// string, `instruction` or `response` is empty or whitespace only (the chat template trims it to
/// nothing), or `category` is not one of [`CATEGORIES`]. Extra fields are ignored. In JSON Lines a
/// final newline is fine but a blank line in the middle is an error.
pub fn load(path: &Path) -> Result<Vec<DollyRecord>, DollyError> {
    load_records(path, Some(DataFormat::Dolly)).map(|l| l.records)
}

/// Loads a file of any [`DataFormat`] (`None`: told by the first record's fields, or the
/// parquet columns), with the same checks and the same errors naming file and line.
pub fn load_records(path: &Path, format: Option<DataFormat>) -> Result<Loaded, DollyError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let open = || File::open(path).map_err(|source| io_err(path, source));
    if name.ends_with(".jsonl.gz") {
        let reader = BufReader::new(flate2::read::MultiGzDecoder::new(open()?));
        read_jsonl(path, reader, format)
    } else if name.ends_with(".jsonl") {
        read_jsonl(path, BufReader::new(open()?), format)
    } else if name.ends_with(".parquet") {
        read_parquet(path, open()?, format)
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
    format: Option<DataFormat>,
) -> Result<Loaded, DollyError> {
    let mut records = Vec::new();
    let mut chosen = format;
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
        let fmt = match chosen {
            Some(f) => f,
            None => {
                let keys = value.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default();
                *chosen.insert(DataFormat::detect(keys).map_err(|m| DollyError::record(path, place, m))?)
            }
        };
        let record = record_from_json(&value, fmt).map_err(|m| DollyError::record(path, place, m))?;
        records.push(record);
    }
    let Some(format_used) = chosen else {
        return Err(DollyError::file(path, "no records"));
    };
    Ok(Loaded { records, format: format_used, detected: format.is_none() })
}

fn read_parquet(path: &Path, file: File, format: Option<DataFormat>) -> Result<Loaded, DollyError> {
    let perr = |e: parquet::errors::ParquetError| DollyError::file(path, format!("parquet: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
    let columns: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let detected = format.is_none();
    let format = match format {
        Some(f) => f,
        None => DataFormat::detect(columns.iter().map(String::as_str)).map_err(|m| DollyError::file(path, m))?,
    };
    let (required, optional) = format.fields();
    let reader = builder.build().map_err(perr)?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| DollyError::file(path, format!("parquet: {e}")))?;
        let messages = match format {
            DataFormat::Messages => Some(messages_column(path, &batch)?),
            _ => None,
        };
        let strings: Vec<(&str, Option<StringArray>)> = required
            .iter()
            .filter(|n| **n != "messages")
            .map(|n| Ok((*n, Some(string_column(path, &batch, n)?))))
            .chain(optional.iter().map(|n| {
                Ok((*n, batch.column_by_name(n).map(|_| string_column(path, &batch, n)).transpose()?))
            }))
            .collect::<Result<_, DollyError>>()?;
        for i in 0..batch.num_rows() {
            let place = Place::Row(records.len());
            let mut obj = serde_json::Map::new();
            for (name, col) in &strings {
                match col {
                    Some(c) if c.is_null(i) && required.contains(name) => {
                        return Err(DollyError::record(path, place, format!("field `{name}` is null")));
                    }
                    Some(c) if !c.is_null(i) => {
                        obj.insert(name.to_string(), Value::String(c.value(i).to_owned()));
                    }
                    _ => {}
                }
            }
            if let Some(m) = &messages {
                obj.insert("messages".into(), m(i).map_err(|msg| DollyError::record(path, place, msg))?);
            }
            let record = record_from_json(&Value::Object(obj), format).map_err(|m| DollyError::record(path, place, m))?;
            records.push(record);
        }
    }
    Ok(Loaded { records, format, detected })
}

/// The `messages` column (a list of `{role, content}` structs) as a function from a row to
/// its JSON list, so a conversation from parquet is checked as one from JSON Lines.
fn messages_column(path: &Path, batch: &RecordBatch) -> Result<impl Fn(usize) -> Result<Value, String>, DollyError> {
    let col = batch.column_by_name("messages").ok_or_else(|| DollyError::file(path, "missing column `messages`"))?;
    let list = arrow::compute::cast(col, &DataType::LargeList(std::sync::Arc::new(arrow::datatypes::Field::new(
        "item",
        match col.data_type() {
            DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
            other => return Err(DollyError::file(path, format!("column `messages` has type {other}, expected a list of {{role, content}}"))),
        },
        true,
    ))))
    .map_err(|e| DollyError::file(path, format!("column `messages`: {e}")))?;
    let list = list.as_any().downcast_ref::<arrow::array::LargeListArray>().cloned().ok_or_else(|| DollyError::file(path, "column `messages`: not a list"))?;
    let structs = list
        .values()
        .as_any()
        .downcast_ref::<arrow::array::StructArray>()
        .cloned()
        .ok_or_else(|| DollyError::file(path, "column `messages`: its items are not {role, content} structs"))?;
    let field = |name: &str| -> Result<StringArray, DollyError> {
        let c = structs.column_by_name(name).ok_or_else(|| DollyError::file(path, format!("column `messages`: items have no `{name}`")))?;
        let c = arrow::compute::cast(c, &DataType::Utf8).map_err(|e| DollyError::file(path, format!("column `messages.{name}`: {e}")))?;
        c.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| DollyError::file(path, format!("column `messages.{name}`: not strings")))
    };
    let (roles, contents) = (field("role")?, field("content")?);
    Ok(move |row: usize| {
        if list.is_null(row) {
            return Err("field `messages` is null".to_string());
        }
        let offsets = list.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let turns = (start..end)
            .map(|j| {
                let text = |a: &StringArray| if a.is_null(j) { Value::Null } else { Value::String(a.value(j).to_owned()) };
                serde_json::json!({"role": text(&roles), "content": text(&contents)})
            })
            .collect();
        Ok(Value::Array(turns))
    })
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
