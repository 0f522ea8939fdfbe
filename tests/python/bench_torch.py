"""PyTorch side of `cargo xtask bench --compare-torch PYTHON`: the same work as the bench did,
written the way a transformers + PEFT user would write it.

The bench writes a spec (JSON) naming the model directory it exported, the batches each
technique trained on (`batch_log` JSON Lines: input_ids, attention_mask, labels with -100
where no loss is taken), the technique settings from its config, and the evaluation
requests it scored. This script

- trains each technique on exactly those batches at the learning rates the bench's
  schedule gave each step: one warm-up step on the first, then the timed steps on the
  next ones (AdamW, global-norm clipping, masks re-applied after each step for the pruned
  techniques, KD with a frozen teacher forward); the losses of every step are reported, so
  the two sides' objectives can be compared, not just their speed;
- then runs one more step split into phases (data, decoder forward, LM head + loss,
  decoder backward, optimizer) for the profile;
- scores the evaluation requests as lm-eval's HF backend does: batch 1, full logits,
  log-softmax, the continuation's log-probs summed; requests whose model input is the same
  (one-token continuations of one context) run once, as lm-eval's context grouping does.

    python3 tests/python/bench_torch.py --spec SPEC.json --out TORCH.json
"""

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
import transformers


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(spec):
    """bf16 autocast when the spec asks for it (`"autocast": "bf16"`: f32 weights, bf16 products,
    as sweelol's `--dtype bf16`); otherwise a context that does nothing."""
    on = spec.get("autocast", "f32") == "bf16"
    return torch.autocast(device_type=spec["device"], dtype=torch.bfloat16, enabled=on)


def load_model(spec):
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[spec.get("dtype", "f32")]
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=dtype, attn_implementation="eager")
    model.config.use_cache = False
    return model.to(spec["device"])


def to_tensors(raw, device):
    """One batch-log line as the tensors transformers takes."""
    return {k: torch.tensor(raw[k], device=device) for k in ("input_ids", "attention_mask", "labels")}


def magnitude_masks(model, sparsity, targets):
    """Per-tensor magnitude masks on the target projections (torch's l1_unstructured)."""
    masks = {}
    for name, p in model.named_parameters():
        if name.endswith(".weight") and any(f".{t}." in name for t in targets):
            k = round(sparsity * p.numel())
            idx = torch.topk(p.detach().abs().flatten(), k, largest=False).indices
            m = torch.ones(p.numel(), dtype=torch.bool, device=p.device)
            m[idx] = False
            masks[name] = m.view_as(p)
            p.data.mul_(masks[name])
    return masks


class Technique:
    """A model set up for one technique, with a user-style step and a phase-split step."""

    def __init__(self, name, t, spec):
        self.name, self.t, self.device = name, t, spec["device"]
        self.spec = spec
        model = load_model(spec)
        self.teacher, self.masks = None, {}
        kind = t["kind"]
        if kind == "lora":
            from peft import LoraConfig, get_peft_model

            lc = t["lora"]
            model = get_peft_model(
                model,
                LoraConfig(r=lc["r"], lora_alpha=lc["lora_alpha"], lora_dropout=lc["lora_dropout"],
                           target_modules=lc["target_modules"], use_rslora=lc["use_rslora"]),
            )
        elif kind == "prompt-tuning":
            from peft import PromptTuningConfig, get_peft_model

            model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=t["prompt_tuning"]["num_virtual_tokens"]))
        if "pruning" in t:
            self.masks = magnitude_masks(model, t["pruning"]["sparsity"], t["pruning"]["target_modules"])
        if kind == "distill":
            self.teacher = load_model(spec).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        model.train()
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.named = dict(model.named_parameters())
        self.opt = torch.optim.AdamW(self.params, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"], weight_decay=t["weight_decay"])

    def kd_loss(self, logits, t_logits, labels, ce):
        """alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE, over the scored positions."""
        d = self.t["distill"]
        temp, alpha = d["temperature"], d["alpha"]
        keep = labels[:, 1:] != -100
        s = logits[:, :-1][keep].float() / temp
        te = t_logits[:, :-1][keep].float() / temp
        kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(te, -1), log_target=True, reduction="batchmean")
        return alpha * temp * temp * kl + (1 - alpha) * ce

    def finish_step(self):
        torch.nn.utils.clip_grad_norm_(self.params, self.t["clip_norm"])
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, m in self.masks.items():
                self.named[name].mul_(m)

    def step(self, b, lr):
        """One optimizer step as a transformers user writes it (at the bench's scheduled lr)."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        with autocast(self.spec):
            out = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
            loss = out.loss
            if self.teacher is not None:
                with torch.no_grad():
                    t_logits = self.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                loss = self.kd_loss(out.logits, t_logits, b["labels"], out.loss)
        loss.backward()
        self.finish_step()
        return loss.item()

    def decoder(self):
        m = self.model
        if hasattr(m, "base_model") and hasattr(m.base_model, "model"):  # PEFT (LoRA)
            m = m.base_model.model
        return m.model, m.lm_head

    def profiled_step(self, raw, lr):
        """The same step, timed phase by phase (the head's backward is run on its own)."""
        phases = {}
        dev = self.device
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        b = to_tensors(raw, dev)
        sync(dev)
        t1 = time.perf_counter()
        phases["data_s"] = t1 - t0
        decoder, head = self.decoder()
        with autocast(self.spec):
            hidden = decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            t_logits = None
            if self.teacher is not None:
                with torch.no_grad():
                    t_logits = self.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        sync(dev)
        t2 = time.perf_counter()
        phases["forward_s"] = t2 - t1
        leaf = hidden.detach().requires_grad_()
        with autocast(self.spec):
            logits = head(leaf)
        cfg = self.model.config
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b["labels"][:, 1:].flatten(), ignore_index=-100)
        loss = self.kd_loss(logits, t_logits, b["labels"], ce) if t_logits is not None else ce
        loss.backward()
        sync(dev)
        t3 = time.perf_counter()
        phases["head_loss_s"] = t3 - t2
        hidden.backward(leaf.grad)
        sync(dev)
        t4 = time.perf_counter()
        phases["backward_s"] = t4 - t3
        self.finish_step()
        sync(dev)
        phases["optimizer_s"] = time.perf_counter() - t4
        return phases


def bench_train(name, t, spec):
    steps = spec["steps"]
    with open(t["batches"]) as f:
        raw = [json.loads(line) for line in f]
    batches = [to_tensors(b, spec["device"]) for b in raw]
    if len(batches) < steps + 1:
        raise SystemExit(f"{t['batches']}: {len(batches)} batches, need {steps + 1}")
    tech = Technique(name, t, spec)
    lrs = t["lrs"]
    losses = [tech.step(batches[0], lrs[0])]  # warm-up
    sync(spec["device"])
    secs, tokens = 0.0, 0
    for i, b in enumerate(batches[1 : steps + 1], start=1):
        t0 = time.perf_counter()
        losses.append(tech.step(b, lrs[i]))
        sync(spec["device"])
        secs += time.perf_counter() - t0
        tokens += int(b["attention_mask"].sum())
    result = {"tokens_per_s": tokens / secs, "step_s": secs / steps, "steps_timed": steps, "tokens": tokens, "losses": losses,
              "trainable_params": sum(p.numel() for p in tech.params)}
    if t["kind"] != "prompt-tuning":  # PEFT's prompt tuning has no separable decoder call
        result["phases"] = tech.profiled_step(raw[min(steps + 1, len(raw) - 1)], lrs[-1])
    del tech
    return result


@torch.no_grad()
def bench_eval(spec):
    with open(spec["eval"]["requests"]) as f:
        tasks = json.load(f)
    model = load_model(spec).eval()
    max_len = model.config.max_position_embeddings
    out = {}
    for task, docs in tasks.items():
        t0 = time.perf_counter()
        lls, forwards = [], 0
        for doc in docs:
            cache = {}
            doc_ll = []
            for ctx, cont in doc["requests"]:
                whole = (ctx + cont)[-(max_len + 1):]
                inp = tuple(whole[:-1])
                if inp not in cache:
                    ids = torch.tensor([inp], device=spec["device"])
                    with autocast(spec):
                        logits = model(input_ids=ids).logits[0]
                    cache[inp] = F.log_softmax(logits.float(), dim=-1)
                    forwards += 1
                logp = cache[inp][-len(cont):]
                doc_ll.append(float(logp.gather(1, torch.tensor(cont, device=spec["device"])[:, None]).sum()))
            lls.append(doc_ll)
        sync(spec["device"])
        secs = time.perf_counter() - t0
        out[task] = {"docs_per_s": len(docs) / secs, "seconds": secs, "forwards": forwards, "loglikelihoods": lls}
        print(f"eval {task}: {len(docs) / secs:.2f} docs/s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="the spec `cargo xtask bench --compare-torch` wrote")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    torch.manual_seed(0)
    report = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if spec["device"] == "cuda" else f"cpu x{torch.get_num_threads()}",
        "train_step": {},
    }
    try:
        import peft

        report["versions"]["peft"] = peft.__version__
    except ImportError:
        pass
    for name, t in spec["train"].items():
        report["train_step"][name] = bench_train(name, t, spec)
        print(name, json.dumps({k: v for k, v in report["train_step"][name].items() if k != "losses"}), flush=True)
        if spec["device"] == "cuda":
            torch.cuda.empty_cache()
    if spec.get("eval"):
        report["eval"] = bench_eval(spec)
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
