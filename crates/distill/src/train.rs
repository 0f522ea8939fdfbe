//! Distillation runs: a student (the run's model, pruned or not) learns from a teacher
//! with `alpha·T²·D(teacher_T ‖ student_T) + (1 − alpha)·CE` per response token. The
//! teacher's logits are computed on the fly for the same chunk of rows the student's loss
//! sees, so the full-vocabulary comparison never holds more than one chunk of logits.
//! KD-Pruned is this with the pruned model as student and its masks kept.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_gemma::{load_pretrained, save_hf_dir, Gemma3};
use sweelol_train::config::resolve_source;
use sweelol_train::loss::head_logits;
use sweelol_train::{
    artifact_dir, autodiff_device, chunked_head_loss, export_sparse, prepare, run_technique, LossOutput, Masks,
    RunConfig, RunIdentity, RunReport, TokenBatch, TrainError, TrainableModel,
};

use rayon::prelude::*;
use sweelol_train::host::{host_f32, runs_on_host};
use sweelol_train::host_head::{self, HeadInputs};
use sweelol_train::host_head_loss;

use crate::host::forward_kl_row;
use crate::{kd_loss, DistillConfig, Divergence};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "distill";

/// The student (trained), its masks if it is sparse, and the frozen teacher.
#[derive(Module, Debug)]
pub struct KdModel {
    pub student: Gemma3,
    #[module(skip)]
    pub masks: Option<Masks>,
    #[module(skip)]
    pub teacher: Gemma3,
    #[module(skip)]
    pub cfg: DistillConfig,
}

impl TrainableModel for KdModel {
    fn lm(&self) -> &Gemma3 {
        &self.student
    }

    fn is_trainable(&self, path: &str) -> bool {
        path.starts_with("student")
    }

    fn loss(&self, batch: &TokenBatch, chunk_rows: usize, denom: f64) -> LossOutput {
        let device = self.student.device();
        let ids = batch.input_tensor(&device);
        let hidden = self.student.hidden_states(self.student.embed(ids.clone()), None);
        // Teacher rows at the scored positions, without a graph.
        let t_hidden = self.teacher.hidden_states(self.teacher.embed(ids), None).detach();
        let [b, t, h] = t_hidden.dims();
        let n = batch.targets.positions.len();
        let pos: Vec<i64> = batch.targets.positions.iter().map(|&p| p as i64).collect();
        let pos = Tensor::<1, Int>::from_data(TensorData::new(pos, [n]), &device);
        let t_rows = t_hidden.reshape([b * t, h]).select(0, pos);
        let t_embed = self.teacher.embed_tokens.val().detach();
        let softcap = self.teacher.config.final_logit_softcapping;
        let targets = &batch.targets.ids;
        let needs_grad = hidden.is_tracked() || self.student.embed_tokens.val().is_require_grad();
        if needs_grad && n > 0 && self.cfg.divergence == Divergence::ForwardKl && runs_on_host(&device) {
            // The fused host head: the teacher's logits per chunk from its host copy.
            let (t_rows, t_embed) = (host_f32(t_rows.inner()), host_f32(t_embed.inner()));
            let (t_rows, t_embed) = (t_rows.as_slice::<f32>().expect("f32"), t_embed.as_slice::<f32>().expect("f32"));
            // `run` checked that teacher and student share the vocabulary.
            let vocab = self.student.embed_tokens.val().dims()[0];
            let cap = softcap.map(|c| c as f32);
            return host_head_loss(&self.student, hidden, &batch.targets.positions, chunk_rows, denom, |rows, z, scale| {
                let teacher = HeadInputs { embed: t_embed, vocab, hidden: h, rows: &t_rows[rows.start * h..rows.end * h], softcap: None };
                let mut t_logits = host_head::logits(&teacher);
                z.par_chunks_mut(vocab)
                    .zip(t_logits.par_chunks_mut(vocab))
                    .zip(&targets[rows])
                    .map(|((s, t), &target)| forward_kl_row(s, t, target as usize, &self.cfg, cap, scale))
                    .sum()
            });
        }
        chunked_head_loss(&self.student, hidden, &batch.targets.positions, chunk_rows, denom, |student_logits, rows| {
            let sdev = student_logits.device();
            let teacher_logits = head_logits(t_embed.clone(), t_rows.clone().narrow(0, rows.start, rows.len()), softcap);
            let ids: Vec<i64> = targets[rows.clone()].iter().map(|&x| x as i64).collect();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows.len()]), &sdev);
            kd_loss(student_logits, teacher_logits, ids, &self.cfg)
        })
    }

    fn after_step(&mut self) {
        if let Some(masks) = &self.masks {
            masks.apply_mut(&mut self.student);
        }
    }
}

/// Distils the teacher `[distill] teacher` into the student `[model] source` on the Dolly
/// rows, on `device` (training uses its autodiff form), keeping the zeros of
/// `[distill] masks` if given. Writes the student as a transformers directory (with its
/// masks and sparsity report when sparse) to `[output] artifact_dir` (default
/// `<output.dir>/model`).
pub fn run(cfg: &RunConfig, distill: &DistillConfig, device: &Device) -> Result<RunReport, TrainError> {
    distill.validate().map_err(|e| TrainError::Settings(e.to_string()))?;
    if distill.top_k().is_some() {
        return Err(TrainError::Settings(
            "[distill] teacher_logits = \"top_k\" is not wired into training yet; use \"on_the_fly\"".into(),
        ));
    }
    let teacher_src = distill
        .teacher
        .as_deref()
        .ok_or_else(|| TrainError::Settings("[distill] teacher is required (the model to learn from)".into()))?;
    let teacher_src = resolve_source(cfg.base_dir(), teacher_src);
    let prepared = prepare(cfg, device)?;
    let teacher = load_pretrained(&teacher_src, &autodiff_device(device))?.model.no_grad();
    let (t_vocab, s_vocab) = (teacher.embed_tokens.val().dims()[0], prepared.model.embed_tokens.val().dims()[0]);
    if t_vocab != s_vocab {
        return Err(TrainError::Settings(format!(
            "[distill] teacher {teacher_src} has a vocabulary of {t_vocab} tokens, the student {s_vocab}: KD compares them token by token"
        )));
    }
    let masks = match &distill.masks {
        Some(path) => {
            let path = cfg.base_dir().join(path);
            let masks = Masks::load(&path, &prepared.model)?;
            Some(masks)
        }
        None => None,
    };
    // The student starts exactly sparse even if its file was edited since pruning.
    let student = match &masks {
        Some(m) => m.apply(prepared.model),
        None => prepared.model,
    };
    let dir = artifact_dir(cfg, "model");
    let tokenizer = prepared.tokenizer;
    let id = RunIdentity::new(cfg, TECHNIQUE, distill);
    let model = KdModel { student, masks, teacher, cfg: distill.clone() };
    run_technique(cfg, &id, model, &prepared.data, &dir, |m, dir| export_student(m, &tokenizer, dir))
}

fn export_student(m: &KdModel, tokenizer: &sweelol_gemma::GemmaTokenizer, dir: &Path) -> Result<(), TrainError> {
    match &m.masks {
        Some(masks) => export_sparse(&m.student, masks, tokenizer, dir).map(|_| ()),
        None => Ok(save_hf_dir(&m.student.valid(), tokenizer, dir)?),
    }
}
