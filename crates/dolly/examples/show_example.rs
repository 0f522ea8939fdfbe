//! Prints one Dolly record as the model is trained on it: every token with its id and whether
//! the loss is computed on it.
//!
//! `cargo run --release -p sweelol-dolly --example show_example -- [ROW] [MAX_LEN]`
//! (defaults: row 1, max_len 512; reads ../shared relative to the workspace root).


use sweelol_dolly::{load, load_tokenizer, prompt_text, target_text, tokenize, TokenizeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let row: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let max_len: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let shared = sweelol_fixtures::shared_dir();

    let records = load(&shared.join("data/dolly/databricks-dolly-15k.jsonl.gz"))?;
    let tokenizer = load_tokenizer(&shared.join("fixtures/gemma-3-270m/tokenizer.json.gz"))?;
    let record = records
        .get(row)
        .ok_or_else(|| format!("row {row} out of range (file has {} rows)", records.len()))?;
    let cfg = TokenizeConfig {
        max_len,
        ..TokenizeConfig::default()
    };
    let ex = tokenize(record, &tokenizer, &cfg)?;

    println!("row {row} ({}), max_len {max_len}", record.category);
    println!("prompt text: {:?}", prompt_text(record));
    println!("target text: {:?}", target_text(record));
    println!(
        "{} tokens, {} in the prompt, {} trained (loss_mask = 1)\n",
        ex.input_ids.len(),
        ex.prompt_len,
        ex.loss_mask.iter().filter(|&&m| m).count()
    );
    println!("{:>4}  {:>6}  mask  token", "pos", "id");
    for (pos, (&id, &mask)) in ex.input_ids.iter().zip(&ex.loss_mask).enumerate() {
        let piece = tokenizer.id_to_token(id).unwrap_or_else(|| "?".into());
        println!("{pos:>4}  {id:>6}  {}     {piece:?}", u8::from(mask));
    }
    Ok(())
}
