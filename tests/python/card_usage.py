"""Runs a model card's own usage on one of sweelol's model folders, with no network.

    HF_HUB_OFFLINE=1 python3 tests/python/card_usage.py MODEL_DIR

Two uses: `pipeline("text-generation")` on chat messages, then the tokenizer's chat
template with `generate(max_new_tokens=40)`. For each it prints the answer and whether
generation stopped at `<end_of_turn>` (the export's `generation_config.json` names it as an
end) before the limit.
"""
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

out = sys.argv[1]
messages = [{"role": "user", "content": "Who are you?"}]
chat = pipeline("text-generation", model=out, dtype=torch.float32)
reply = chat(messages, max_new_tokens=40, do_sample=False)[0]["generated_text"][-1]
print(f"pipeline: {reply['role']}: {reply['content']!r}")

tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    gen = model.generate(**ids, max_new_tokens=40, do_sample=False)[0, ids["input_ids"].shape[1]:]
end = tok.convert_tokens_to_ids("<end_of_turn>")
stopped = end in gen.tolist()
print(f"generate: {len(gen)} new tokens, stopped at <end_of_turn>: {stopped}")
print(f"generate: {tok.decode(gen, skip_special_tokens=True)!r}")
