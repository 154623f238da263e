# Training throughput of lab model v4's shape in PyTorch on this GPU: what would a PyTorch trainer buy
# over the candle trainer's ~145 K tokens/s (f32/TF32)? Prints one line per setting; random tokens,
# one fixed row shape per setting. On the GPU machine: python3 crates/headscope-train/torch/throughput.py [SECONDS]
import time, sys, torch, torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
budget = float(sys.argv[1]) if len(sys.argv) > 1 else 240
t_start = time.time()
def cfg(hidden=384, inter=1024, layers=8, heads=12, kv=4):
    return LlamaConfig(vocab_size=8192, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads, max_position_embeddings=8448,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, attn_implementation="sdpa")
def run(name, c, rows, tokens, dtype, compile_, steps=20):
    if time.time() - t_start > budget:
        print(f"{name}: skipped (time)", flush=True); return
    try:
        torch.manual_seed(0)
        m = LlamaForCausalLM(c).cuda()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        x = torch.randint(0, 8192, (rows, tokens + 1), device="cuda")
        w = torch.rand(rows, tokens, device="cuda")
        def loss_fn(inp, tgt, wt):
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                logits = m(input_ids=inp).logits
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
            return (nll * wt.reshape(-1)).sum() / wt.sum()
        f = torch.compile(loss_fn) if compile_ else loss_fn
        def step():
            l = f(x[:, :-1], x[:, 1:], w)
            l.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step(); opt.zero_grad(set_to_none=True)
            return l
        for _ in range(5): step()
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t = time.time()
        for _ in range(steps): step()
        torch.cuda.synchronize()
        dt = (time.time() - t) / steps
        n = sum(p.numel() for p in m.parameters())
        print(f"{name}: {n/1e6:.1f} M params, {rows}x{tokens}: {dt*1e3:.1f} ms/step, {rows*tokens/dt/1e3:.0f} K tokens/s, peak {torch.cuda.max_memory_allocated()/2**30:.1f} GiB", flush=True)
        del m, opt
    except Exception as e:
        print(f"{name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    torch.cuda.empty_cache()
print(torch.__version__, torch.cuda.get_device_name(), flush=True)
v4 = cfg()
run("tf32 eager", v4, 8, 2048, torch.float32, False)
run("bf16 eager", v4, 8, 2048, torch.bfloat16, False)
run("bf16 eager 4x4096", v4, 4, 4096, torch.bfloat16, False)
run("bf16 eager 32x2048", v4, 32, 2048, torch.bfloat16, False)
run("bf16 compiled", v4, 8, 2048, torch.bfloat16, True)
run("bf16 compiled 32x2048", v4, 32, 2048, torch.bfloat16, True)
run("bf16 compiled 8x8192", v4, 8, 8192, torch.bfloat16, True)
run("tf32 compiled 32x2048", v4, 32, 2048, torch.float32, True)
run("bf16 compiled wider (512, 16 heads, 12 layers) 32x2048", cfg(512, 1536, 12, 16, 4), 32, 2048, torch.bfloat16, True)
print(f"probe took {time.time()-t_start:.0f}s")
