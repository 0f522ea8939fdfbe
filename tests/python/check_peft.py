"""Loads sweelol's PEFT adapters with PEFT itself and compares logits.

Each adapter is opened twice: `PeftModel.from_pretrained` over a base loaded by hand, and
`AutoPeftModelForCausalLM.from_pretrained` on the adapter folder alone, which finds the base
through the adapter's own `base_model_name_or_path`.

Run `cargo run --release -p xtask --example peft_adapters -- DIR` first, then
`python3 tests/python/check_peft.py DIR` (needs torch, transformers and peft).
"""
import sys

import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

out = sys.argv[1]
tiny = sys.argv[2] if len(sys.argv) > 2 else "../shared/fixtures/tiny-gemma3"
ours = load_file(f"{out}/sweelol_logits.safetensors")
ids = ours["input_ids"].long().unsqueeze(0)
worst = {}


def peft_model(kind):
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="eager")
    return PeftModel.from_pretrained(base, f"{out}/{kind}")


def auto_peft_model(kind):
    return AutoPeftModelForCausalLM.from_pretrained(f"{out}/{kind}", dtype=torch.float32, attn_implementation="eager")


for kind in ("lora", "prompt"):
    for how, load in (("PeftModel", peft_model), ("AutoPeftModelForCausalLM", auto_peft_model)):
        model = load(kind).eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        if kind == "prompt":
            # PEFT returns logits for the virtual positions too; drop them.
            logits = logits[-ids.shape[1]:]
        diff = (logits - ours[f"{kind}_logits"][0]).abs().max().item()
        worst[f"{kind} ({how})"] = diff
        print(f"{kind}: {how} vs sweelol max |logit diff| = {diff:.2e}")
assert all(d < 1e-3 for d in worst.values()), worst
print("PEFT agrees with sweelol within 1e-3")
