//! Distillation runs: a student (the run's model, pruned or not) learns from a teacher
//! with `alpha·T²·D(teacher_T ‖ student_T) + (1 − alpha)·CE` per response token. The
//! teacher's logits are computed on the fly for the same chunk of rows the student's loss
//! sees, so the full-vocabulary comparison never holds more than one chunk of logits.
//! KD-Pruned is this with the pruned model as student and its masks kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_gemma::kernels::host::host_head_kernels;
use sweelol_gemma::{load_pretrained, save_hf_dir, tied_head_logits, Gemma3, Precision};
use sweelol_train::config::resolve_source;
use sweelol_train::lookup;
use sweelol_train::{
    artifact_dir, autodiff_device, chunked_head_loss, export_sparse, prepare, run_technique, Artifact, LossOutput, Masks,
    RunConfig, RunIdentity, RunReport, Technique, TokenBatch, TrainError, TrainableModel,
};

use rayon::prelude::*;
use sweelol_gemma::kernels::host::host_f32;
use sweelol_gemma::kernels::head::{self, HeadInputs};
use sweelol_train::host_head_loss;

use crate::host::forward_kl_row;
use crate::{kd_loss, DistillConfig, DistillError, Divergence};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "distill";

/// Knowledge distillation in the technique registry.
pub struct Distill;

impl Technique for Distill {
    const NAME: &'static str = TECHNIQUE;
    const TABLE: &'static str = "distill";
    const ARTIFACT: Artifact = Artifact::Model;
    type Settings = DistillConfig;

    fn validate(settings: &DistillConfig) -> Result<(), String> {
        settings.validate().map_err(|e| match e {
            DistillError::Config(msg) => msg,
            other => other.to_string(),
        })
    }

    fn run(cfg: &RunConfig, settings: &DistillConfig, device: &Device) -> Result<RunReport, TrainError> {
        run(cfg, settings, device)
    }

    fn keep_masks(settings: &mut DistillConfig, masks: Option<PathBuf>) {
        settings.masks = masks;
    }

    fn set_teacher(settings: &mut DistillConfig, teacher: String) -> bool {
        settings.teacher = Some(teacher);
        true
    }
}

/// The student (trained), its masks if it is sparse, and the frozen teacher.
#[derive(Module, Debug)]
pub struct KdModel {
    pub student: Gemma3,
    #[module(skip)]
    pub masks: Option<Masks>,
    #[module(skip)]
    pub teacher: Gemma3,
    /// On the CPU backend, the teacher's embedding table `[vocab, hidden]` (f32, host),
    /// moved out of `teacher` once (see [`TeacherTable`]).
    #[module(skip)]
    pub teacher_table: Option<TeacherTable>,
    #[module(skip)]
    pub cfg: DistillConfig,
}

/// Rows of teacher logits the fused KD head holds at once: 256 rows keep the teacher's
/// `[256, 262144]` f32 logits at 256 MiB next to the student's chunk. A whole 512-row
/// chunk's (512 MiB) puts KD-Pruned, the study's largest row, over 8 GiB (`docs/perf.md`,
/// "KD's teacher logits 256 rows at a time").
const TEACHER_ROWS: usize = 256;

/// The teacher's embedding table held on the host, for the CPU backend. The fused head
/// reads the table every step; copying it out of the model each time held a second 0.67 GB
/// copy (for the 270M model) at the step's memory peak. So it is moved out once: the
/// teacher model keeps a one-row placeholder and its input embeddings are gathered here.
#[derive(Clone, Debug)]
pub struct TeacherTable {
    data: Arc<TensorData>,
    hidden: usize,
    /// The teacher's [`Gemma3::embed_scale`].
    scale: f32,
}

impl TeacherTable {
    /// Takes the table out of `teacher`, leaving a `[1, hidden]` placeholder.
    pub fn take(mut teacher: Gemma3) -> (Gemma3, TeacherTable) {
        let table = teacher.embed_tokens.val();
        let [_, hidden] = table.dims();
        let device = table.device();
        let scale = teacher.embed_scale();
        teacher.embed_tokens = Param::from_tensor(Tensor::zeros([1, hidden], &device));
        (teacher, TeacherTable { data: Arc::new(host_f32(table.inner())), hidden, scale })
    }

    fn rows(&self) -> &[f32] {
        self.data.as_slice::<f32>().expect("f32 table")
    }

    /// `Gemma3::embed` from the host table: each id's row times the embedding scale, in f32.
    fn embed(&self, batch: &TokenBatch, device: &Device) -> Tensor<3> {
        let (h, rows, scale) = (self.hidden, self.rows(), self.scale);
        let mut out = Vec::with_capacity(batch.input_ids.len() * h);
        for &id in &batch.input_ids {
            out.extend(rows[id as usize * h..(id as usize + 1) * h].iter().map(|x| x * scale));
        }
        Tensor::from_data(TensorData::new(out, [batch.batch_size, batch.seq_len, h]), device)
    }
}

impl KdModel {
    /// The teacher's final hidden rows `[n, hidden]` at the batch's scored positions,
    /// without a graph.
    fn teacher_rows(&self, batch: &TokenBatch, ids: Tensor<2, Int>) -> Tensor<2> {
        let device = self.student.device();
        let t_embeds = match &self.teacher_table {
            Some(table) => table.embed(batch, &device),
            None => self.teacher.embed(ids),
        };
        let t_hidden = self.teacher.hidden_states(t_embeds, None).detach();
        let [b, t, h] = t_hidden.dims();
        let n = batch.targets.positions.len();
        let pos: Vec<i64> = batch.targets.positions.iter().map(|&p| p as i64).collect();
        let pos = Tensor::<1, Int>::from_data(TensorData::new(pos, [n]), &device);
        t_hidden.reshape([b * t, h]).select(0, pos)
    }

    /// Forward KL on the CPU backend, through the fused host head: the student's logits
    /// per chunk, the teacher's from its host table [`TEACHER_ROWS`] rows at a time in one
    /// reused buffer, never a device copy of the table; [`forward_kl_row`] is the math.
    fn fused_loss(&self, table: &TeacherTable, hidden: Tensor<3>, t_rows: Tensor<2>, batch: &TokenBatch, chunk_rows: usize, denom: f64) -> LossOutput {
        let h = t_rows.dims()[1];
        let t_rows = host_f32(t_rows.inner());
        let (t_rows, t_embed) = (t_rows.as_slice::<f32>().expect("f32"), table.rows());
        // `run` checked that teacher and student share the vocabulary.
        let vocab = self.student.embed_tokens.val().dims()[0];
        let cap = self.teacher.config.final_logit_softcapping.map(|c| c as f32);
        let targets = &batch.targets.ids;
        let mut t_logits = Vec::new();
        host_head_loss(&self.student, hidden, &batch.targets.positions, chunk_rows, denom, |rows, z, scale| {
            t_logits.resize(TEACHER_ROWS.min(rows.len()) * vocab, 0.0);
            let mut loss = 0.0;
            for start in rows.clone().step_by(TEACHER_ROWS) {
                let sub = start..(start + TEACHER_ROWS).min(rows.end);
                // The teacher's logits stay f32: a bf16 product here would convert the whole
                // table again for every block of rows.
                let teacher = HeadInputs {
                    embed: t_embed,
                    vocab,
                    hidden: h,
                    rows: &t_rows[sub.start * h..sub.end * h],
                    softcap: None,
                    precision: Precision::F32,
                };
                let t = &mut t_logits[..sub.len() * vocab];
                head::logits_into(&teacher, t);
                let s = &mut z[(sub.start - rows.start) * vocab..(sub.end - rows.start) * vocab];
                loss += s
                    .par_chunks_mut(vocab)
                    .zip(t.par_chunks_mut(vocab))
                    .zip(&targets[sub])
                    .map(|((s, t), &target)| forward_kl_row(s, t, target as usize, &self.cfg, cap, scale))
                    .sum::<f64>();
            }
            loss
        })
    }

    /// Any divergence on any backend, as tensor operations per chunk ([`kd_loss`]), the
    /// teacher's logits from its own table. On the CPU backend with the host table taken
    /// out, only an empty batch gets here, and its loss reads no table.
    fn tensor_loss(&self, hidden: Tensor<3>, t_rows: Tensor<2>, batch: &TokenBatch, chunk_rows: usize, denom: f64) -> LossOutput {
        let softcap = self.teacher.config.final_logit_softcapping;
        let t_embed = self.teacher.embed_tokens.val().detach();
        let targets = &batch.targets.ids;
        chunked_head_loss(&self.student, hidden, &batch.targets.positions, chunk_rows, denom, |student_logits, rows| {
            let sdev = student_logits.device();
            let teacher_logits = tied_head_logits(t_rows.clone().narrow(0, rows.start, rows.len()), t_embed.clone(), softcap, self.teacher.precision());
            let ids: Vec<i64> = targets[rows.clone()].iter().map(|&x| x as i64).collect();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows.len()]), &sdev);
            kd_loss(student_logits, teacher_logits, ids, &self.cfg)
        })
    }
}

impl TrainableModel for KdModel {
    fn lm(&self) -> &Gemma3 {
        &self.student
    }

    fn is_trainable(&self, path: &str) -> bool {
        path.starts_with("student")
    }

    fn loss(&self, batch: &TokenBatch, chunk_rows: usize, denom: f64) -> LossOutput {
        let ids = batch.input_tensor(&self.student.device());
        let (embeds, lookup) = lookup::embed(&self.student, ids.clone());
        let hidden = self.student.hidden_states(embeds, None);
        let t_rows = self.teacher_rows(batch, ids);
        let fused = self.teacher_table.as_ref().filter(|_| !batch.targets.positions.is_empty() && self.cfg.divergence == Divergence::ForwardKl);
        match fused {
            Some(table) => self.fused_loss(table, hidden, t_rows, batch, chunk_rows, denom),
            None => self.tensor_loss(hidden, t_rows, batch, chunk_rows, denom),
        }
        .with_lookup(lookup)
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
    sweelol_train::validated::<Distill>(distill)?;
    let teacher_src = distill
        .teacher
        .as_deref()
        .ok_or_else(|| TrainError::Settings("[distill] teacher is required (the model to learn from)".into()))?;
    let teacher_src = resolve_source(cfg.base_dir(), teacher_src);
    let prepared = prepare(cfg, device)?;
    let teacher = load_pretrained(&teacher_src, &autodiff_device(device))?.model.no_grad().with_precision(cfg.train.dtype);
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
    // Only the fused host head (forward KL) reads the table on the host.
    let (teacher, teacher_table) = if host_head_kernels(device) && distill.divergence == Divergence::ForwardKl {
        let (teacher, table) = TeacherTable::take(teacher);
        (teacher, Some(table))
    } else {
        (teacher, None)
    };
    let model = KdModel { student, masks, teacher, teacher_table, cfg: distill.clone() };
    run_technique(cfg, &id, model, &prepared.data, &prepared.lock, &dir, |m, dir| export_student(m, &tokenizer, dir))
}

fn export_student(m: &KdModel, tokenizer: &sweelol_gemma::GemmaTokenizer, dir: &Path) -> Result<(), TrainError> {
    match &m.masks {
        Some(masks) => export_sparse(&m.student, masks, tokenizer, dir).map(|_| ()),
        None => Ok(save_hf_dir(&m.student.valid(), tokenizer, dir)?),
    }
}
