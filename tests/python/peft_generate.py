"""Greedy answer of a base model with one of sweelol's PEFT adapters, loaded by PEFT itself.

    python3 tests/python/peft_generate.py BASE_DIR ADAPTER_DIR "user message" [N]

BASE_DIR is a transformers directory (`cargo xtask export` writes one); the adapter's
`base_model_name_or_path` is overridden with it, as PEFT documents for a local base. Prints
the N new tokens (default 24) that greedy decoding gives, for comparison with
`cargo xtask generate --adapter ADAPTER_DIR --chat "user message" --max-new-tokens N`.
"""
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, adapter_dir, message = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 24
tok = AutoTokenizer.from_pretrained(base_dir)
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(base, adapter_dir).eval()
ids = tok.apply_chat_template(
    [{"role": "user", "content": message}], add_generation_prompt=True, return_tensors="pt", return_dict=True
)["input_ids"]
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=n, do_sample=False)
print(f"PEFT ({type(model.peft_config['default']).__name__}) loaded {adapter_dir}")
print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
