# What torch.use_deterministic_algorithms costs the lab model's training step (eager mode), and where
# a step's GPU time goes. On the GPU machine:
#   CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 crates/headscope-train/torch/determinism_cost.py
import time, torch, torch.nn.functional as F, sys
from transformers import LlamaConfig, LlamaForCausalLM
torch.backends.cuda.matmul.allow_tf32 = True
c = LlamaConfig(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=12,
    num_key_value_heads=4, head_dim=32, max_position_embeddings=8448, tie_word_embeddings=True, attn_implementation="sdpa")
def run(det, rows, tokens, shapes_vary=False):
    torch.use_deterministic_algorithms(det)
    m = LlamaForCausalLM(c).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    def step(r, t):
        x = torch.randint(0, 8192, (r, t + 1), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lg = m(input_ids=x[:, :-1]).logits
        l = F.cross_entropy(lg.float().reshape(-1, 8192), x[:, 1:].reshape(-1))
        l.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad()
    for _ in range(3): step(rows, tokens)
    torch.cuda.synchronize(); t0 = time.time()
    for _ in range(10): step(rows, tokens)
    torch.cuda.synchronize(); dt = (time.time() - t0) / 10
    print(f"deterministic={det} {rows}x{tokens}: {dt*1e3:.1f} ms/step, {rows*tokens/dt/1e3:.0f} K tok/s", flush=True)
for det in (False, True):
    run(det, 8, 2048); run(det, 4, 4096)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
    run(True, 4, 4096)
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=12))
