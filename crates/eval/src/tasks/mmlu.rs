//! MMLU with lm-eval 0.4's `mmlu` default template (`_default_template_yaml`): test split,
//! few-shot examples are the first k rows of the dev split, description line per subject.

use std::path::Path;

use super::{
    int_values, parquet_shards, py_strip, read_parquet, string_list_values, string_values,
};
use super::{McDoc, Place, TaskError, TARGET_DELIMITER};

/// The 57 MMLU subjects, in lm-eval's task-name spelling.
pub const SUBJECTS: [&str; 57] = [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
];

/// `doc_to_choice` of the template.
pub const CHOICES: [&str; 4] = ["A", "B", "C", "D"];

/// lm-eval's `fewshot_delimiter`.
const FEWSHOT_DELIMITER: &str = "\n\n";

/// One row of a subject file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmluRow {
    pub question: String,
    pub choices: [String; 4],
    /// Index of the correct choice (0 = A).
    pub answer: usize,
}

/// The per-subject `description`, placed before any few-shot examples.
pub fn description(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    )
}

/// The template's `doc_to_text`: the stripped question, lettered choices, and `Answer:`.
pub fn doc_to_text(row: &MmluRow) -> String {
    let [a, b, c, d] = &row.choices;
    format!(
        "{}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:",
        py_strip(&row.question)
    )
}

/// A solved example as lm-eval's sampler renders it: text, delimiter, answer letter, `\n\n`.
fn fewshot_example(row: &MmluRow) -> String {
    format!(
        "{}{TARGET_DELIMITER}{}{FEWSHOT_DELIMITER}",
        doc_to_text(row),
        CHOICES[row.answer]
    )
}

/// Test-split documents of one subject, each with the first `num_fewshot` dev rows as examples.
pub fn load_docs(
    data_root: &Path,
    subject: &str,
    num_fewshot: usize,
) -> Result<Vec<McDoc>, TaskError> {
    let test = load_split(data_root, subject, "test")?;
    let mut prefix = description(subject);
    if num_fewshot > 0 {
        let dev = load_split(data_root, subject, "dev")?;
        if num_fewshot > dev.len() {
            return Err(TaskError::Unsupported(format!(
                "mmlu_{subject}: {num_fewshot}-shot requested but the dev split has {} rows",
                dev.len()
            )));
        }
        for row in &dev[..num_fewshot] {
            prefix.push_str(&fewshot_example(row));
        }
    }
    Ok(test
        .iter()
        .enumerate()
        .map(|(doc_id, row)| McDoc {
            doc_id,
            context: format!("{prefix}{}", doc_to_text(row)),
            choices: CHOICES.iter().map(|c| c.to_string()).collect(),
            gold: row.answer,
        })
        .collect())
}

/// Rows of `split` (`test`, `dev` or `val`): the original CSV
/// `mmlu/data/<split>/<subject>_<split>.csv` if present, else the `cais/mmlu` parquet layout
/// `mmlu/<subject>/<split>-*.parquet` (where the dev split is also called `dev`).
pub fn load_split(data_root: &Path, subject: &str, split: &str) -> Result<Vec<MmluRow>, TaskError> {
    let csv_path = data_root
        .join("mmlu/data")
        .join(split)
        .join(format!("{subject}_{split}.csv"));
    if csv_path.is_file() {
        return read_csv(&csv_path);
    }
    let pq_dir = data_root.join("mmlu").join(subject);
    let shards = parquet_shards(&pq_dir, split);
    if shards.is_empty() {
        return Err(TaskError::NotFound {
            what: format!("mmlu_{subject} {split} split"),
            tried: vec![csv_path, pq_dir.join(format!("{split}-*.parquet"))],
        });
    }
    let mut rows = Vec::new();
    for shard in &shards {
        rows.extend(read_parquet_rows(shard)?);
    }
    Ok(rows)
}

fn answer_index(letter: &str) -> Option<usize> {
    CHOICES.iter().position(|c| *c == letter)
}

/// Headerless CSV: question, A, B, C, D, answer letter.
pub fn read_csv(path: &Path) -> Result<Vec<MmluRow>, TaskError> {
    let file = std::fs::File::open(path).map_err(|e| TaskError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            TaskError::row(path, Place::Line(line), format!("invalid CSV: {e}"))
        })?;
        let place = Place::Line(record.position().map_or(0, |p| p.line() as usize));
        if record.len() != 6 {
            return Err(TaskError::row(
                path,
                place,
                format!(
                    "expected 6 columns (question, A, B, C, D, answer), found {}",
                    record.len()
                ),
            ));
        }
        let answer = answer_index(&record[5]).ok_or_else(|| {
            TaskError::row(
                path,
                place,
                format!("answer {:?} is not one of A, B, C, D", &record[5]),
            )
        })?;
        rows.push(MmluRow {
            question: record[0].to_owned(),
            choices: std::array::from_fn(|i| record[i + 1].to_owned()),
            answer,
        });
    }
    Ok(rows)
}

/// `cais/mmlu` parquet: question (string), choices (list<string>, 4 items), answer (int 0..3).
fn read_parquet_rows(path: &Path) -> Result<Vec<MmluRow>, TaskError> {
    let mut rows = Vec::new();
    for batch in read_parquet(path)? {
        let first = rows.len();
        let questions = string_values(path, &batch, "question")?;
        let choices = string_list_values(path, &batch, "choices", first)?;
        let answers = int_values(path, &batch, "answer")?;
        for (i, ((q, c), a)) in questions.into_iter().zip(choices).zip(answers).enumerate() {
            let place = Place::Row(first + i);
            let err = |m: String| TaskError::row(path, place, m);
            let question = q.ok_or_else(|| err("`question` is null".into()))?;
            let choices = c.ok_or_else(|| err("`choices` is null".into()))?;
            let n = choices.len();
            let choices: [String; 4] = choices
                .try_into()
                .map_err(|_| err(format!("`choices` has {n} items, expected 4")))?;
            let answer = match a {
                Some(a @ 0..=3) => a as usize,
                Some(a) => return Err(err(format!("`answer` {a} is not in 0..=3"))),
                None => return Err(err("`answer` is null".into())),
            };
            rows.push(MmluRow {
                question,
                choices,
                answer,
            });
        }
    }
    Ok(rows)
}
