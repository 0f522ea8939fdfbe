"""Loads sweelol's PEFT adapters with PEFT itself and compares logits.

Run `cargo run --release -p xtask --example peft_adapters -- DIR` first, then
`python3 tests/python/check_peft.py DIR` (needs torch, transformers and peft).
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

out = sys.argv[1]
tiny = sys.argv[2] if len(sys.argv) > 2 else "../shared/fixtures/tiny-gemma3"
ours = load_file(f"{out}/sweelol_logits.safetensors")
ids = ours["input_ids"].long().unsqueeze(0)
worst = {}
for kind in ("lora", "prompt"):
    base = AutoModelForCausalLM.from_pretrained(tiny, torch_dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, f"{out}/{kind}").eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    if kind == "prompt":
        # PEFT returns logits for the virtual positions too; drop them.
        logits = logits[-ids.shape[1]:]
    diff = (logits - ours[f"{kind}_logits"][0]).abs().max().item()
    worst[kind] = diff
    print(f"{kind}: PEFT vs sweelol max |logit diff| = {diff:.2e}")
assert all(d < 1e-3 for d in worst.values()), worst
print("PEFT agrees with sweelol within 1e-3")
