"""Loads a sweelol export with transformers and compares with the reference fixture.

`cargo xtask export --out DIR` writes the real model; then
`python3 tests/python/check_hf_export.py DIR` checks that transformers loads it and that
its logits for the fixture prompts equal transformers' reference logits.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

out = sys.argv[1]
fix = sys.argv[2] if len(sys.argv) > 2 else "../shared/fixtures/gemma-3-270m"
model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(out)
ref = load_file(f"{fix}/expected_logits.safetensors")
prompts = json.load(open(f"{fix}/prompts.json"))
for i, p in enumerate(prompts):
    ids = tok(p["prompt"], return_tensors="pt").input_ids
    assert ids[0].tolist() == ref[f"p{i}.input_ids"].tolist(), "tokenizer ids differ"
    with torch.no_grad():
        logits = model(ids).logits[0]
    diff = (logits[-1] - ref[f"p{i}.last_logits"]).abs().max().item()
    print(f"prompt {i}: transformers on sweelol export, last-position max |diff| = {diff:.2e}")
    assert diff < 1e-3
print("transformers loads the export and reproduces the reference logits")
