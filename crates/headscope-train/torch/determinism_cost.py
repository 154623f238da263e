# What torch.use_deterministic_algorithms costs the lab model's training step, and where a step's GPU
# time goes. On the GPU machine:
#   CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 crates/headscope-train/torch/determinism_cost.py [compile]
# With `compile`, the loss is compiled as train_lab.py compiles it (one static graph per row shape).
import time, torch, torch.nn.functional as F, sys
from transformers import LlamaConfig, LlamaForCausalLM
torch.backends.cuda.matmul.allow_tf32 = True
c = LlamaConfig(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=12,
    num_key_value_heads=4, head_dim=32, max_position_embeddings=8448, tie_word_embeddings=True, attn_implementation="sdpa")
compiled = "compile" in sys.argv[1:]
def run(det, rows, tokens):
    torch.use_deterministic_algorithms(det)
    torch._dynamo.reset()
    m = LlamaForCausalLM(c).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    def loss_of(inp, tgt):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lg = m(input_ids=inp).logits
        return F.cross_entropy(lg.float().reshape(-1, 8192), tgt.reshape(-1))
    loss_fn = torch.compile(loss_of, dynamic=False) if compiled else loss_of
    def step(r, t):
        x = torch.randint(0, 8192, (r, t + 1), device="cuda")
        l = loss_fn(x[:, :-1], x[:, 1:])
        l.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad()
    for _ in range(3): step(rows, tokens)
    torch.cuda.synchronize(); t0 = time.time()
    for _ in range(10): step(rows, tokens)
    torch.cuda.synchronize(); dt = (time.time() - t0) / 10
    print(f"{'compiled' if compiled else 'eager'} deterministic={det} {rows}x{tokens}: {dt*1e3:.1f} ms/step, {rows*tokens/dt/1e3:.0f} K tok/s", flush=True)
for det in (False, True):
    run(det, 8, 2048)
    if not compiled:
        run(det, 4, 4096)
if compiled:
    sys.exit(0)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
    run(True, 4, 4096)
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=12))
