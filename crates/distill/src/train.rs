//! KD-Pruned: a pruned student learns from a teacher (the Full-Finetune model) with
//! `alpha·T²·D(teacher_T ‖ student_T) + (1 − alpha)·CE` per response token. The teacher's
//! logits are computed on the fly for the same chunk of rows the student's loss sees, so
//! the full-vocabulary comparison never holds more than one chunk of logits.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use sweelol_backend::BackendKind;
use sweelol_gemma::{load_pretrained, Gemma3};
use sweelol_pruning::{export_pruned, prune, Masks, PruningConfig};
use sweelol_train::loss::head_logits;
use sweelol_train::{
    artifact_dir, chunked_head_loss, prepare, run_technique, LossOutput, RunConfig, RunReport, Technique, TokenBatch,
    TrainError, TrainableModel,
};

use crate::{kd_loss, DistillConfig};

/// The pruned student (trained), its masks, and the frozen teacher.
#[derive(Module, Debug)]
pub struct KdModel {
    pub student: Gemma3,
    #[module(skip)]
    pub masks: Masks,
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
        chunked_head_loss(&self.student, hidden, &batch.targets.positions, chunk_rows, denom, |student_logits, rows| {
            let sdev = student_logits.device();
            let teacher_logits = head_logits(t_embed.clone(), t_rows.clone().narrow(0, rows.start, rows.len()), softcap);
            let ids: Vec<i64> = targets[rows.clone()].iter().map(|&x| x as i64).collect();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows.len()]), &sdev);
            kd_loss(student_logits, teacher_logits, ids, &self.cfg)
        })
    }

    fn after_step(&mut self) {
        self.masks.apply_mut(&mut self.student);
    }
}

/// Runs a `technique = "distill"` config: prune the student (`[pruning]`), load the teacher
/// (`[distill] teacher`), distill, export the student as a transformers directory.
pub fn run(cfg: &RunConfig, backend: &BackendKind) -> Result<RunReport, TrainError> {
    let dcfg: DistillConfig = cfg.section("distill")?.unwrap_or_default();
    dcfg.validate().map_err(|e| TrainError::config(&cfg.file, e.to_string()))?;
    if dcfg.top_k().is_some() {
        return Err(TrainError::config(&cfg.file, "[distill] teacher_logits = \"top_k\" is not wired into training yet; use \"on_the_fly\""));
    }
    let pcfg: PruningConfig = cfg.section("pruning")?.unwrap_or_default();
    let teacher_src = dcfg
        .teacher
        .clone()
        .ok_or_else(|| TrainError::config(&cfg.file, "[distill] teacher is required (the Full-Finetune model)"))?;
    // A teacher path is relative to the config file, like every other path in it.
    let base = cfg.file.parent().unwrap_or(std::path::Path::new("."));
    let teacher_src = if !teacher_src.contains(':') && std::path::Path::new(&teacher_src).is_relative() {
        base.join(&teacher_src).to_string_lossy().into_owned()
    } else {
        teacher_src
    };
    let prepared = prepare(cfg, backend, Technique::Distill)?;
    let device = backend.autodiff_device();
    let teacher = load_pretrained(&teacher_src, &device)?.model.no_grad();
    let (student, masks) = prune(prepared.model, &pcfg).map_err(|e| TrainError::config(&cfg.file, e.to_string()))?;
    let dir = artifact_dir(cfg, pcfg.export_dir.clone(), "model");
    let tokenizer = prepared.tokenizer;
    let model = KdModel { student, masks, teacher, cfg: dcfg };
    run_technique(cfg, model, &prepared.data, &dir, |m, dir| export_pruned(&m.student, &m.masks, &tokenizer, dir))
}
