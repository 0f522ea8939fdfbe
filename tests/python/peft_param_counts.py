"""PEFT trainable-parameter counts for gemma-3-270m on the meta device (no weights),
to compare with sweelol-lora and sweelol-prompt-tuning trainable_params."""
import json, torch
from transformers import Gemma3TextConfig, AutoModelForCausalLM
from peft import LoraConfig, PromptTuningConfig, get_peft_model, TaskType
cfg = Gemma3TextConfig(**{k: v for k, v in json.load(open("../shared/fixtures/gemma-3-270m/config.json")).items() if k not in ("architectures", "torch_dtype", "_sliding_window_pattern")})
with torch.device("meta"):
    base = AutoModelForCausalLM.from_config(cfg)
m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type=TaskType.CAUSAL_LM))
print("lora r=8 q,v trainable:", sum(p.numel() for p in m.parameters() if p.requires_grad))
with torch.device("meta"):
    base = AutoModelForCausalLM.from_config(cfg)
m = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=20, task_type=TaskType.CAUSAL_LM))
print("prompt tuning 20 tokens trainable:", sum(p.numel() for p in m.parameters() if p.requires_grad))
