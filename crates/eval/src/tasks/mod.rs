//! Evaluation task datasets, built exactly as lm-evaluation-harness 0.4.x builds its
//! multiple-choice requests (`mmlu_<subject>` default template and `hellaswag`).

pub mod hellaswag;
pub mod mmlu;

use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
pub use sweelol_records::{py_strip, Place};

/// lm-eval's default `target_delimiter`, put between context and choice.
pub const TARGET_DELIMITER: &str = " ";

/// The tasks of the study.
pub const STUDY_TASKS: [&str; 6] = [
    "mmlu_formal_logic",
    "mmlu_high_school_computer_science",
    "mmlu_professional_law",
    "mmlu_abstract_algebra",
    "mmlu_high_school_mathematics",
    "hellaswag",
];

/// One multiple-choice document, exactly as lm-eval builds its requests: the log-likelihood of
/// `continuation(i)` given `context` is scored for each choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McDoc {
    /// Index in the evaluated split (lm-eval's `doc_id`).
    pub doc_id: usize,
    pub context: String,
    /// `doc_to_choice` output, without the delimiter.
    pub choices: Vec<String>,
    pub gold: usize,
}

impl McDoc {
    /// The continuation scored for choice `i`: `target_delimiter + choice`.
    ///
    /// # Panics
    /// If `i >= self.choices.len()`, like slice indexing.
    pub fn continuation(&self, i: usize) -> String {
        format!("{TARGET_DELIMITER}{}", self.choices[i])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    Mmlu { subject: String },
    Hellaswag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The lm-eval task name, e.g. `mmlu_formal_logic`.
    pub name: String,
    pub kind: TaskKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: String,
    pub docs: Vec<McDoc>,
    /// lm-eval reports `acc_norm` for hellaswag but only `acc` for mmlu.
    pub reports_acc_norm: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task {name:?}: {reason}")]
    UnknownTask { name: String, reason: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One row of a data file is malformed.
    #[error("{}: {place}: {message}", .path.display())]
    Row {
        path: PathBuf,
        place: Place,
        message: String,
    },
    /// A data file as a whole is unusable (parquet schema, missing column).
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("{what}: no data file found; looked for {}", fmt_paths(.tried))]
    NotFound { what: String, tried: Vec<PathBuf> },
    /// A request the data cannot serve (e.g. more few-shot examples than the dev split has).
    #[error("{0}")]
    Unsupported(String),
}

fn fmt_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl TaskError {
    pub(crate) fn row(path: &Path, place: Place, message: impl Into<String>) -> Self {
        TaskError::Row {
            path: path.to_path_buf(),
            place,
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        TaskError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TaskError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Parses an lm-eval task name: `hellaswag` or `mmlu_<subject>` for one of the 57
/// [`mmlu::SUBJECTS`]. Groups such as `mmlu` or `mmlu_stem` are not single tasks and are rejected.
pub fn parse_task_name(name: &str) -> Result<TaskSpec, TaskError> {
    let kind = if name == "hellaswag" {
        TaskKind::Hellaswag
    } else if let Some(subject) = name.strip_prefix("mmlu_") {
        if !mmlu::SUBJECTS.contains(&subject) {
            return Err(TaskError::UnknownTask {
                name: name.into(),
                reason: format!("`{subject}` is not one of the 57 MMLU subjects"),
            });
        }
        TaskKind::Mmlu {
            subject: subject.into(),
        }
    } else {
        return Err(TaskError::UnknownTask {
            name: name.into(),
            reason: "expected `hellaswag` or `mmlu_<subject>`".into(),
        });
    };
    Ok(TaskSpec {
        name: name.into(),
        kind,
    })
}

/// Loads a task's documents from `data_root` (the shared `data/` folder): the first `limit`
/// docs of the evaluated split (all when `None`), each with `num_fewshot` examples in its context.
pub fn load_task(
    spec: &TaskSpec,
    data_root: &Path,
    limit: Option<usize>,
    num_fewshot: usize,
) -> Result<Task, TaskError> {
    let mut docs = match &spec.kind {
        TaskKind::Mmlu { subject } => mmlu::load_docs(data_root, subject, num_fewshot)?,
        TaskKind::Hellaswag => {
            if num_fewshot > 0 {
                // lm-eval draws hellaswag shots from the train split, which is not shipped.
                return Err(TaskError::Unsupported(format!(
                    "hellaswag: {num_fewshot}-shot needs the train split, which is not in {}",
                    data_root.display()
                )));
            }
            hellaswag::load_docs(data_root)?
        }
    };
    if let Some(limit) = limit {
        docs.truncate(limit);
    }
    Ok(Task {
        name: spec.name.clone(),
        docs,
        reports_acc_norm: matches!(spec.kind, TaskKind::Hellaswag),
    })
}

// ------------------------------------------------------------------ shared helpers

/// Parquet files in `dir` named `<split>-*.parquet`, in name order (shards are numbered).
fn parquet_shards(dir: &Path, split: &str) -> Vec<PathBuf> {
    let prefix = format!("{split}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".parquet"))
        })
        .collect();
    found.sort();
    found
}

/// Reads all record batches of a parquet file.
fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, TaskError> {
    let file = std::fs::File::open(path).map_err(|e| TaskError::io(path, e))?;
    let perr = |e: parquet::errors::ParquetError| TaskError::file(path, format!("parquet: {e}"));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(perr)?
        .build()
        .map_err(perr)?
        .map(|b| b.map_err(|e| TaskError::file(path, format!("parquet: {e}"))))
        .collect()
}

fn column<'a>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, TaskError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| TaskError::file(path, format!("missing column `{name}`")))
}

fn is_string_type(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A string column as `Vec<Option<String>>` (None = null); other types are an error.
fn string_values(
    path: &Path,
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Option<String>>, TaskError> {
    let col = column(path, batch, name)?;
    if !is_string_type(col.data_type()) {
        return Err(TaskError::file(
            path,
            format!(
                "column `{name}` has type {}, expected a string type",
                col.data_type()
            ),
        ));
    }
    cast_strings(path, name, col)
}

fn cast_strings(path: &Path, name: &str, col: &ArrayRef) -> Result<Vec<Option<String>>, TaskError> {
    let cast = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| TaskError::file(path, format!("column `{name}`: {e}")))?;
    let strings = cast
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .ok_or_else(|| TaskError::file(path, format!("column `{name}`: not a string array")))?;
    Ok(strings.iter().map(|s| s.map(str::to_owned)).collect())
}

/// A `list<string>` column as one `Option<Vec<String>>` per row; a null element is an error.
fn string_list_values(
    path: &Path,
    batch: &RecordBatch,
    name: &str,
    first_row: usize,
) -> Result<Vec<Option<Vec<String>>>, TaskError> {
    let col = column(path, batch, name)?;
    let list_type = DataType::List(std::sync::Arc::new(
        arrow::datatypes::Field::new_list_field(DataType::Utf8, true),
    ));
    let item_ok = match col.data_type() {
        DataType::List(f) | DataType::LargeList(f) => is_string_type(f.data_type()),
        _ => false,
    };
    if !item_ok {
        return Err(TaskError::file(
            path,
            format!(
                "column `{name}` has type {}, expected a list of strings",
                col.data_type()
            ),
        ));
    }
    let cast = arrow::compute::cast(col, &list_type)
        .map_err(|e| TaskError::file(path, format!("column `{name}`: {e}")))?;
    let list = cast
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .ok_or_else(|| TaskError::file(path, format!("column `{name}`: not a list array")))?;
    let mut out = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        if list.is_null(i) {
            out.push(None);
            continue;
        }
        let items = cast_strings(path, name, &list.value(i))?;
        let items = items
            .into_iter()
            .enumerate()
            .map(|(j, s)| {
                s.ok_or_else(|| {
                    TaskError::row(
                        path,
                        Place::Row(first_row + i),
                        format!("`{name}[{j}]` is null"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Some(items));
    }
    Ok(out)
}

/// An integer column as `Vec<Option<i64>>`; other types are an error.
fn int_values(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, TaskError> {
    let col = column(path, batch, name)?;
    if !col.data_type().is_integer() {
        return Err(TaskError::file(
            path,
            format!(
                "column `{name}` has type {}, expected an integer type",
                col.data_type()
            ),
        ));
    }
    let cast = arrow::compute::cast(col, &DataType::Int64)
        .map_err(|e| TaskError::file(path, format!("column `{name}`: {e}")))?;
    let ints = cast
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or_else(|| TaskError::file(path, format!("column `{name}`: not an integer array")))?;
    Ok(ints.iter().collect())
}
