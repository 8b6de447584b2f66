"""The PEFT anchor of DESIGN.md, measured on the same machine as our bench: LoRA r=16 on all
seven projections of a Qwen2.5-1.5B-shaped model with random bf16 weights, 16 x 512 tokens,
fwd + bwd + AdamW. Prints one JSON line: tokens/sec and peak GPU memory (GiB)."""
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

B, L, STEPS = 16, 512, 3
cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                  tie_word_embeddings=True)
torch.manual_seed(0)
model = Qwen2ForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"]))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
x = torch.randint(0, cfg.vocab_size, (B, L), device="cuda")


def step():
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


step()
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
t0 = time.time()
for _ in range(STEPS):
    step()
torch.cuda.synchronize()
dt = time.time() - t0
print(json.dumps({"tokPerSec": B * L * STEPS / dt, "peakGiB": torch.cuda.max_memory_allocated() / 2**30,
                  "batch": B, "len": L, "steps": STEPS}))
