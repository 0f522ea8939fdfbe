"""Opens one of sweelol's adapters with `AutoPeftModelForCausalLM.from_pretrained`, offline.

    python3 tests/python/auto_peft.py BASE_DIR ADAPTER_DIR "user message" [N]

The adapter is used as written: its `base_model_name_or_path` is `google/gemma-3-270m`. With
no network, transformers resolves that name through the hub cache (`HF_HUB_CACHE`) in offline
mode (`HF_HUB_OFFLINE=1`), so the script lays BASE_DIR (a directory `cargo xtask export`
writes) into a throwaway cache under that name and lets PEFT find the base the way it would
on a machine that had downloaded it. Prints the N greedy new tokens (default 40) of the chat
prompt, for comparison with
`cargo xtask generate --adapter ADAPTER_DIR --chat "user message" --max-new-tokens N`.
"""
import json
import os
import sys
import tempfile

base_dir, adapter_dir, message = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 40

with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
    base_name = json.load(f)["base_model_name_or_path"]

# The cache layout transformers reads: models--ORG--NAME/{refs/main, snapshots/REV/...}.
cache = tempfile.mkdtemp(prefix="sweelol-hub-cache.")
repo = os.path.join(cache, "models--" + base_name.replace("/", "--"))
revision = "0" * 40
snapshot = os.path.join(repo, "snapshots", revision)
os.makedirs(snapshot)
os.makedirs(os.path.join(repo, "refs"))
with open(os.path.join(repo, "refs", "main"), "w") as f:
    f.write(revision)
for name in os.listdir(base_dir):
    os.symlink(os.path.abspath(os.path.join(base_dir, name)), os.path.join(snapshot, name))
os.environ["HF_HUB_CACHE"] = cache
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402  (after the environment above, which the hub library reads on import)
from peft import AutoPeftModelForCausalLM  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(base_name)
print(f"AutoPeftModelForCausalLM: {type(model).__name__} over {base_name} (resolved offline to {base_dir})")
ids = tok.apply_chat_template(
    [{"role": "user", "content": message}], add_generation_prompt=True, return_tensors="pt", return_dict=True
)["input_ids"]
with torch.no_grad():
    out = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False)
print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
