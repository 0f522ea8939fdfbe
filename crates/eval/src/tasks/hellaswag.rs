//! HellaSwag as lm-eval's `hellaswag` task builds it (`utils.py`: `preprocess`, `process_docs`):
//! validation split, query `activity_label: ctx_a Ctx_b`, the four endings as choices.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use super::{column, int_values, py_strip, McDoc, Place, TaskError};
use super::{parquet_shards, read_parquet, string_list_values, string_values};

/// lm-eval's `preprocess`: strip, `" [title]"` -> `". "`, drop every `[...]` span (regex
/// `\[.*?\]`, which cannot cross a newline), then replace each `"  "` with `" "` (one pass).
pub fn preprocess(text: &str) -> String {
    let text = py_strip(text).replace(" [title]", ". ");
    remove_bracketed(&text).replace("  ", " ")
}

/// `re.sub(r"\[.*?\]", "", text)`: from each `[`, remove through the nearest `]` unless a newline
/// comes first (Python's `.` does not match `\n`), in which case the `[` stays.
fn remove_bracketed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(']').filter(|&c| !after[..c].contains('\n'));
        match close {
            Some(c) => rest = &after[c + 1..],
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Python's `str.capitalize()` (3.8+): the first character in title case, the rest lowercased
/// with Unicode full case mapping, including the final-sigma rule.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out = titlecase(first);
    // Lowercase the whole string so `Σ` sees its real neighbours (the original first char
    // included, as CPython does), then drop what the first char lowercased to.
    let skip = first.to_lowercase().count();
    out.extend(s.to_lowercase().chars().skip(skip));
    out
}

/// Unicode full title-case mapping of one character.
fn titlecase(c: char) -> String {
    // Georgian Mkhedruli letters are their own title case (their upper case is Mtavruli).
    if matches!(c, '\u{10D0}'..='\u{10FA}' | '\u{10FD}'..='\u{10FF}') {
        return c.to_string();
    }
    match TITLECASE_DIFFERS.binary_search_by_key(&c, |&(k, _)| k) {
        Ok(i) => TITLECASE_DIFFERS[i].1.to_owned(),
        Err(_) => c.to_uppercase().collect(),
    }
}

/// Characters whose title case differs from their upper case (from Unicode's UnicodeData and
/// SpecialCasing, as Python 3.11 applies them), sorted by code point.
const TITLECASE_DIFFERS: [(char, &str); 89] = [
    ('\u{00DF}', "\u{0053}\u{0073}"),
    ('\u{01C4}', "\u{01C5}"),
    ('\u{01C5}', "\u{01C5}"),
    ('\u{01C6}', "\u{01C5}"),
    ('\u{01C7}', "\u{01C8}"),
    ('\u{01C8}', "\u{01C8}"),
    ('\u{01C9}', "\u{01C8}"),
    ('\u{01CA}', "\u{01CB}"),
    ('\u{01CB}', "\u{01CB}"),
    ('\u{01CC}', "\u{01CB}"),
    ('\u{01F1}', "\u{01F2}"),
    ('\u{01F2}', "\u{01F2}"),
    ('\u{01F3}', "\u{01F2}"),
    ('\u{0587}', "\u{0535}\u{0582}"),
    ('\u{1F80}', "\u{1F88}"),
    ('\u{1F81}', "\u{1F89}"),
    ('\u{1F82}', "\u{1F8A}"),
    ('\u{1F83}', "\u{1F8B}"),
    ('\u{1F84}', "\u{1F8C}"),
    ('\u{1F85}', "\u{1F8D}"),
    ('\u{1F86}', "\u{1F8E}"),
    ('\u{1F87}', "\u{1F8F}"),
    ('\u{1F88}', "\u{1F88}"),
    ('\u{1F89}', "\u{1F89}"),
    ('\u{1F8A}', "\u{1F8A}"),
    ('\u{1F8B}', "\u{1F8B}"),
    ('\u{1F8C}', "\u{1F8C}"),
    ('\u{1F8D}', "\u{1F8D}"),
    ('\u{1F8E}', "\u{1F8E}"),
    ('\u{1F8F}', "\u{1F8F}"),
    ('\u{1F90}', "\u{1F98}"),
    ('\u{1F91}', "\u{1F99}"),
    ('\u{1F92}', "\u{1F9A}"),
    ('\u{1F93}', "\u{1F9B}"),
    ('\u{1F94}', "\u{1F9C}"),
    ('\u{1F95}', "\u{1F9D}"),
    ('\u{1F96}', "\u{1F9E}"),
    ('\u{1F97}', "\u{1F9F}"),
    ('\u{1F98}', "\u{1F98}"),
    ('\u{1F99}', "\u{1F99}"),
    ('\u{1F9A}', "\u{1F9A}"),
    ('\u{1F9B}', "\u{1F9B}"),
    ('\u{1F9C}', "\u{1F9C}"),
    ('\u{1F9D}', "\u{1F9D}"),
    ('\u{1F9E}', "\u{1F9E}"),
    ('\u{1F9F}', "\u{1F9F}"),
    ('\u{1FA0}', "\u{1FA8}"),
    ('\u{1FA1}', "\u{1FA9}"),
    ('\u{1FA2}', "\u{1FAA}"),
    ('\u{1FA3}', "\u{1FAB}"),
    ('\u{1FA4}', "\u{1FAC}"),
    ('\u{1FA5}', "\u{1FAD}"),
    ('\u{1FA6}', "\u{1FAE}"),
    ('\u{1FA7}', "\u{1FAF}"),
    ('\u{1FA8}', "\u{1FA8}"),
    ('\u{1FA9}', "\u{1FA9}"),
    ('\u{1FAA}', "\u{1FAA}"),
    ('\u{1FAB}', "\u{1FAB}"),
    ('\u{1FAC}', "\u{1FAC}"),
    ('\u{1FAD}', "\u{1FAD}"),
    ('\u{1FAE}', "\u{1FAE}"),
    ('\u{1FAF}', "\u{1FAF}"),
    ('\u{1FB2}', "\u{1FBA}\u{0345}"),
    ('\u{1FB3}', "\u{1FBC}"),
    ('\u{1FB4}', "\u{0386}\u{0345}"),
    ('\u{1FB7}', "\u{0391}\u{0342}\u{0345}"),
    ('\u{1FBC}', "\u{1FBC}"),
    ('\u{1FC2}', "\u{1FCA}\u{0345}"),
    ('\u{1FC3}', "\u{1FCC}"),
    ('\u{1FC4}', "\u{0389}\u{0345}"),
    ('\u{1FC7}', "\u{0397}\u{0342}\u{0345}"),
    ('\u{1FCC}', "\u{1FCC}"),
    ('\u{1FF2}', "\u{1FFA}\u{0345}"),
    ('\u{1FF3}', "\u{1FFC}"),
    ('\u{1FF4}', "\u{038F}\u{0345}"),
    ('\u{1FF7}', "\u{03A9}\u{0342}\u{0345}"),
    ('\u{1FFC}', "\u{1FFC}"),
    ('\u{FB00}', "\u{0046}\u{0066}"),
    ('\u{FB01}', "\u{0046}\u{0069}"),
    ('\u{FB02}', "\u{0046}\u{006C}"),
    ('\u{FB03}', "\u{0046}\u{0066}\u{0069}"),
    ('\u{FB04}', "\u{0046}\u{0066}\u{006C}"),
    ('\u{FB05}', "\u{0053}\u{0074}"),
    ('\u{FB06}', "\u{0053}\u{0074}"),
    ('\u{FB13}', "\u{0544}\u{0576}"),
    ('\u{FB14}', "\u{0544}\u{0565}"),
    ('\u{FB15}', "\u{0544}\u{056B}"),
    ('\u{FB16}', "\u{054E}\u{0576}"),
    ('\u{FB17}', "\u{0544}\u{056D}"),
];

/// Validation-split documents: `hellaswag/hellaswag_val.jsonl.gz` (or `.jsonl`), else Hugging
/// Face parquet `hellaswag/validation-*.parquet` or `hellaswag/data/validation-*.parquet`.
pub fn load_docs(data_root: &Path) -> Result<Vec<McDoc>, TaskError> {
    let dir = data_root.join("hellaswag");
    let gz = dir.join("hellaswag_val.jsonl.gz");
    let plain = dir.join("hellaswag_val.jsonl");
    if gz.is_file() {
        let file = std::fs::File::open(&gz).map_err(|e| TaskError::io(&gz, e))?;
        return read_jsonl(&gz, flate2::read::MultiGzDecoder::new(file));
    }
    if plain.is_file() {
        let file = std::fs::File::open(&plain).map_err(|e| TaskError::io(&plain, e))?;
        return read_jsonl(&plain, file);
    }
    let data_dir = dir.join("data");
    let mut shards = parquet_shards(&dir, "validation");
    if shards.is_empty() {
        shards = parquet_shards(&data_dir, "validation");
    }
    if shards.is_empty() {
        return Err(TaskError::NotFound {
            what: "hellaswag validation split".into(),
            tried: vec![
                gz,
                plain,
                dir.join("validation-*.parquet"),
                data_dir.join("validation-*.parquet"),
            ],
        });
    }
    let mut docs = Vec::new();
    for shard in &shards {
        read_parquet_docs(shard, &mut docs)?;
    }
    Ok(docs)
}

/// The raw fields lm-eval uses.
struct RawDoc {
    activity_label: String,
    ctx_a: String,
    ctx_b: String,
    endings: Vec<String>,
    label: LabelValue,
}

enum LabelValue {
    Int(i64),
    Str(String),
}

/// lm-eval's `process_docs`; `int(label)` must give a valid ending index.
fn build_doc(doc_id: usize, raw: RawDoc) -> Result<McDoc, String> {
    if raw.endings.len() != 4 {
        return Err(format!(
            "`endings` has {} items, expected 4",
            raw.endings.len()
        ));
    }
    let gold = match &raw.label {
        LabelValue::Int(i) => Some(*i),
        // Python's int() accepts surrounding whitespace.
        LabelValue::Str(s) => py_strip(s).parse::<i64>().ok(),
    };
    let gold = match gold {
        Some(g @ 0..=3) => g as usize,
        _ => {
            let shown = match &raw.label {
                LabelValue::Int(i) => i.to_string(),
                LabelValue::Str(s) => format!("{s:?}"),
            };
            return Err(format!("`label` {shown} is not an ending index 0..=3"));
        }
    };
    let ctx = format!("{} {}", raw.ctx_a, capitalize(&raw.ctx_b));
    Ok(McDoc {
        doc_id,
        context: preprocess(&format!("{}: {ctx}", raw.activity_label)),
        choices: raw.endings.iter().map(|e| preprocess(e)).collect(),
        gold,
    })
}

fn json_string(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field `{name}` must be a string, found {other}")),
        None => Err(format!("missing field `{name}`")),
    }
}

fn raw_from_json(value: &Value) -> Result<RawDoc, String> {
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let endings = match obj.get("endings") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("field `endings` must be an array of strings")?,
        Some(_) => return Err("field `endings` must be an array of strings".into()),
        None => return Err("missing field `endings`".into()),
    };
    let label = match obj.get("label") {
        Some(Value::Number(n)) => LabelValue::Int(
            n.as_i64()
                .ok_or_else(|| format!("`label` {n} is not an integer"))?,
        ),
        Some(Value::String(s)) => LabelValue::Str(s.clone()),
        Some(other) => return Err(format!("field `label` must be an integer, found {other}")),
        None => return Err("missing field `label`".into()),
    };
    Ok(RawDoc {
        activity_label: json_string(obj, "activity_label")?,
        ctx_a: json_string(obj, "ctx_a")?,
        ctx_b: json_string(obj, "ctx_b")?,
        endings,
        label,
    })
}

fn read_jsonl(path: &Path, reader: impl Read) -> Result<Vec<McDoc>, TaskError> {
    let mut reader = BufReader::new(reader);
    let mut docs = Vec::new();
    let mut buf = Vec::new();
    for line_no in 1.. {
        let place = Place::Line(line_no);
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| TaskError::row(path, place, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| TaskError::row(path, place, format!("not valid UTF-8: {e}")))?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Err(TaskError::row(path, place, "empty line"));
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| TaskError::row(path, place, format!("invalid JSON: {e}")))?;
        let doc = raw_from_json(&value)
            .and_then(|raw| build_doc(docs.len(), raw))
            .map_err(|m| TaskError::row(path, place, m))?;
        docs.push(doc);
    }
    Ok(docs)
}

/// Hugging Face parquet: string columns plus `endings` (list<string>) and `label` (string, as
/// on the hub, or integer).
fn read_parquet_docs(path: &Path, docs: &mut Vec<McDoc>) -> Result<(), TaskError> {
    for batch in read_parquet(path)? {
        let first = docs.len();
        let mut labels: Vec<Option<LabelValue>> =
            if column(path, &batch, "label")?.data_type().is_integer() {
                int_values(path, &batch, "label")?
                    .into_iter()
                    .map(|v| v.map(LabelValue::Int))
                    .collect()
            } else {
                string_values(path, &batch, "label")?
                    .into_iter()
                    .map(|v| v.map(LabelValue::Str))
                    .collect()
            };
        let activity = string_values(path, &batch, "activity_label")?;
        let ctx_a = string_values(path, &batch, "ctx_a")?;
        let ctx_b = string_values(path, &batch, "ctx_b")?;
        let endings = string_list_values(path, &batch, "endings", first)?;
        for i in 0..batch.num_rows() {
            let place = Place::Row(first + i);
            let need = |v: &Option<String>, name: &str| {
                v.clone()
                    .ok_or_else(|| TaskError::row(path, place, format!("`{name}` is null")))
            };
            let raw = RawDoc {
                activity_label: need(&activity[i], "activity_label")?,
                ctx_a: need(&ctx_a[i], "ctx_a")?,
                ctx_b: need(&ctx_b[i], "ctx_b")?,
                endings: endings[i]
                    .clone()
                    .ok_or_else(|| TaskError::row(path, place, "`endings` is null"))?,
                label: labels[i]
                    .take()
                    .ok_or_else(|| TaskError::row(path, place, "`label` is null"))?,
            };
            let doc = build_doc(first + i, raw).map_err(|m| TaskError::row(path, place, m))?;
            docs.push(doc);
        }
    }
    Ok(())
}
