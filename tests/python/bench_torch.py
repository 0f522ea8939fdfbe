"""PyTorch reference for `cargo xtask bench`: the same train-step shapes in transformers + PEFT.

Times one optimizer step (forward, backward, AdamW) per technique at batch 4 x 256 on a
Gemma-3 built from a config.json (weights are random: speed does not depend on them), and
prints JSON in the shape of the bench's `train_step` block. Techniques as the configs set them:
full fine-tune; LoRA r=8 on q/v; prompt tuning with 20 virtual tokens; fine-tuning with 50%
masks re-applied after each step; KD (frozen teacher forward + student, forward KL at T=2,
alpha 0.5) with a masked student.

    python3 tests/python/bench_torch.py --config CONFIG_JSON [--device cuda] [--dtype bf16]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build(cfg, device, dtype):
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).to(device=device, dtype=dtype)
    model.config.use_cache = False
    return model


def magnitude_masks(model):
    """50% per-tensor magnitude masks on every projection weight (torch l1_unstructured)."""
    masks = {}
    for name, p in model.named_parameters():
        if name.endswith(".weight") and any(f".{m}." in name for m in PROJECTIONS):
            k = round(0.5 * p.numel())
            idx = torch.topk(p.detach().abs().flatten(), k, largest=False).indices
            m = torch.ones(p.numel(), dtype=torch.bool, device=p.device)
            m[idx] = False
            masks[name] = m.view_as(p)
            p.data.mul_(masks[name])
    return masks


def time_steps(step, steps, device):
    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def bench(technique, cfg, args):
    dev, dtype = args.device, {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=dev)
    model = build(cfg, dev, dtype)
    teacher, masks = None, {}
    if technique == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    elif technique == "prompt-tuning":
        from peft import PromptTuningConfig, get_peft_model

        model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20))
    elif technique in ("finetuned-pruned", "kd-pruned"):
        masks = magnitude_masks(model)
    if technique == "kd-pruned":
        teacher = build(cfg, dev, dtype).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.01)
    named = dict(model.named_parameters())

    def step():
        out = model(input_ids=ids, labels=ids)
        loss = out.loss
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits
            T = 2.0
            kd = F.kl_div(
                F.log_softmax(out.logits[:, :-1].float() / T, -1).flatten(0, 1),
                F.log_softmax(t_logits[:, :-1].float() / T, -1).flatten(0, 1),
                log_target=True,
                reduction="batchmean",
            )
            loss = 0.5 * T * T * kd + 0.5 * loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for name, m in masks.items():
            named[name].data.mul_(m)

    secs = time_steps(step, args.steps, dev)
    result = {
        "tokens_per_s": args.batch * args.seq / secs,
        "step_s": secs,
        "steps_timed": args.steps,
        "batch": [args.batch, args.seq],
        "trainable_params": sum(p.numel() for p in params),
    }
    if dev == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    del model, teacher, opt
    if dev == "cuda":
        torch.cuda.empty_cache()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a Gemma-3 config.json (e.g. from `cargo xtask export`)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--only", default=None, help="comma-separated techniques")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = Gemma3TextConfig.from_json_file(args.config)
    cfg._attn_implementation = "eager"
    techniques = ["full-finetune", "lora", "prompt-tuning", "finetuned-pruned", "kd-pruned"]
    if args.only:
        techniques = args.only.split(",")
    report = {
        "framework": f"torch {torch.__version__}",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{torch.get_num_threads()}",
        "dtype": args.dtype,
        "train_step": {},
    }
    for t in techniques:
        report["train_step"][t] = bench(t, cfg, args)
        print(t, json.dumps(report["train_step"][t]), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
