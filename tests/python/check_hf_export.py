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

# The published model card's usage, with no network: the chat template and the generation
# config come with the export (tokenizer_config.json, generation_config.json).
messages = [{"role": "user", "content": "Who are you?"}]
text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
assert text == "<bos><start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n", repr(text)
end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
assert end_of_turn in model.generation_config.eos_token_id, model.generation_config.eos_token_id
enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
generated = model.generate(**enc, max_new_tokens=40, do_sample=False)[0, enc["input_ids"].shape[1]:].tolist()
print(f"generate: {len(generated)} new tokens, ends with {tok.convert_ids_to_tokens(generated[-1:])}: {tok.decode(generated)!r}")
assert len(generated) == 40 or generated[-1] in model.generation_config.eos_token_id, "stops only at an end token"
if len(sys.argv) > 3 and sys.argv[3] == "--pipeline":
    from transformers import pipeline
    pipe = pipeline("text-generation", model=out)
    reply = pipe(messages, max_new_tokens=40, do_sample=False)[0]["generated_text"]
    print(f"pipeline: {reply[-1]!r}")
    assert reply[-1]["role"] == "assistant"
print("chat template, generation config and generate work on the export")
