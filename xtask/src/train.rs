// Wiring: in main.rs add `mod train;` and a `Train { #[arg(long)] config: PathBuf }` subcommand that calls `train::run_train(&config, &cli.backend)?` (xtask needs the deps sweelol-train and sweelol-full-finetune).

//! `cargo xtask train --config configs/<technique>.toml`: read a run config and hand it to
//! the crate of its technique.

use std::path::Path;

use anyhow::{bail, Context};
use sweelol_backend::BackendKind;
use sweelol_train::{RunConfig, Technique};

/// Reads the TOML at `config_path`, runs its technique on `backend`, and prints where the
/// outputs went.
pub fn run_train(config_path: &Path, backend: &BackendKind) -> anyhow::Result<()> {
    let cfg = RunConfig::load(config_path)?;
    match cfg.technique {
        Technique::FullFinetune => {
            let r = sweelol_full_finetune::run(&cfg, backend)
                .with_context(|| format!("full fine-tune from {}", config_path.display()))?;
            let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "full-finetune: {} steps on {} examples (backend {backend}); last train loss {}, held-out loss {} ({} examples)",
                r.steps,
                r.train_examples,
                fmt(r.last_loss),
                fmt(r.eval_loss),
                r.eval_examples
            );
            if let Some(from) = &r.resumed_from {
                println!("resumed from {}", from.display());
            }
            println!("model:      {}", r.model_dir.display());
            println!("metrics:    {}", r.metrics_path.display());
            if let Some(ck) = &r.last_checkpoint {
                println!("checkpoint: {}", ck.display());
            }
            Ok(())
        }
        other => bail!("technique `{other}` is not built yet ({})", config_path.display()),
    }
}
