#!/usr/bin/env python3
"""The lab model's fast trainer: the recipe's own batches (`headscope train-data`, built by the Rust
exercise generator, step for step as `headscope train` draws them) fed to Hugging Face's
LlamaForCausalLM in PyTorch with bf16 matrix products, fused SDPA attention, torch.compile and fused
AdamW. On the lent H200 that is about 6x the candle trainer's tokens per second (measured: 0.9-1.0 M
against 145-176 K tokens/s for lab model v4's shape, fixed row shape), for the same optimiser, schedule and loss:

- AdamW (beta 0.9/0.95, eps 1e-8), decoupled weight decay on matrices but the embeddings, global
  gradient-norm clipping, linear warm-up then cosine decay to `min_lr` (the recipe's `[train]`);
- the loss is the weighted mean next-token cross-entropy, each token weighted as the batch says
  (answers and their opening tokens count more);
- the starting weights are `headscope train --stop-at 0`'s: the Rust trainer's seeded initialisation,
  or the `--init-from` model's weights;
- deterministic kernels (torch.use_deterministic_algorithms), so that a rerun on the same GPU and
  software gives the same weights;
- checkpoints (model, optimiser, step) every `checkpoint_every` steps and at a time limit; rerunning the
  same command resumes where it stopped, with the same batches as an uninterrupted run;
- writes model.safetensors (f16, the names the Rust loader and transformers read) and loss.csv in the
  same columns as `headscope train`.

Usage (on the GPU machine, from the repository root):
  python3 crates/headscope-train/torch/train_lab.py --bin HEADSCOPE --recipe R --corpus C --out DIR \
      [--init-from MODEL_DIR] [--max-minutes M] [--stop-at STEP]
"""
import argparse, json, math, os, queue, struct, subprocess, sys, threading, time, tomllib

import numpy as np

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

MAGIC = b"HSBATCH1"  # headscope_train::BATCH_STREAM_MAGIC


def lr_at(step, t):
    """The recipe's schedule, as headscope-train's `lr_at`."""
    if step < t["warmup"]:
        return t["lr"] * (step + 1) / t["warmup"]
    span = max(t["steps"] - t["warmup"], 1)
    progress = min((step - t["warmup"]) / span, 1.0)
    return t["min_lr"] + 0.5 * (t["lr"] - t["min_lr"]) * (1.0 + math.cos(math.pi * progress))


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError(f"the batch stream ended early ({len(b)} of {n} bytes)")
    return b


def batch_reader(proc, first, last, out_q):
    """Reads the stream of `headscope train-data` into pinned tensors, ahead of the training loop."""
    try:
        f = proc.stdout
        if read_exact(f, 8) != MAGIC:
            raise ValueError("not a headscope batch stream (wrong magic): is --bin the right headscope build?")
        for expected in range(first, last):
            step, rows, tokens = struct.unpack("<III", read_exact(f, 12))
            if step != expected:
                raise ValueError(f"the batch stream sent step {step}, expected {expected}")
            n = rows * tokens
            ids = np.frombuffer(read_exact(f, 8 * n), dtype="<u4").astype(np.int64).reshape(2, rows, tokens)
            w = np.frombuffer(read_exact(f, 4 * n), dtype="<f4").reshape(rows, tokens)
            out_q.put((step, torch.from_numpy(ids).pin_memory(), torch.from_numpy(w.copy()).pin_memory()))
        out_q.put(None)
    except BaseException as e:  # handed to the training loop, which reports it
        out_q.put(e)


def export(model, cfg, path):
    """model.safetensors in f16 under the Hugging Face names (no lm_head when it is tied)."""
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tmp = str(path) + ".tmp"
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the headscope binary (any build: it only makes batches)")
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--init-from")
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--stop-at", type=int)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--no-compile", action="store_true", help="eager mode (slower; for debugging)")
    a = ap.parse_args()

    recipe = tomllib.load(open(a.recipe, "rb"))
    t = recipe["train"]
    t.setdefault("warmup", 0)
    out = a.out
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "torch-checkpoint.pt")
    init_flag = ["--init-from", a.init_from] if a.init_from else []
    if not os.path.exists(ckpt):
        # The model files and the starting weights, from the Rust trainer (its seeded initialisation or
        # the earlier stage's weights; also its tokenizer, trained here unless one is in --out).
        subprocess.run([a.bin, "train", "--recipe", a.recipe, "--corpus", a.corpus, "--out", out, "--stop-at", "0",
                        "--device", "cpu", "--workers", str(a.workers)] + init_flag, check=True)

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    cfg = LlamaConfig.from_pretrained(out)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg)
    state = load_file(os.path.join(out, "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        sys.exit(f"the starting weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]}, {"params": keep, "weight_decay": 0.0}],
                            lr=t["lr"], betas=(0.9, 0.95), eps=1e-8, fused=True)
    step = 0
    if os.path.exists(ckpt):
        c = torch.load(ckpt, map_location=dev, weights_only=True)
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["optimizer"])
        step = c["step"]
        print(f"resumed from {ckpt} at step {step}", file=sys.stderr)
    n_params = sum(p.numel() for p in model.parameters())
    last = min(a.stop_at, t["steps"]) if a.stop_at is not None else t["steps"]
    print(f"{n_params} parameters; training to step {last} of {t['steps']} on {torch.cuda.get_device_name()}", file=sys.stderr)

    def loss_of(inputs, targets, weights):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=inputs).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return (nll * weights.reshape(-1)).sum() / weights.sum()

    # One static graph per row shape (a recipe has a few): with automatic dynamic shapes the second
    # shape recompiles symbolically, and the first such run trained at eager speed (~190 K tokens/s).
    loss_fn = loss_of if a.no_compile else torch.compile(loss_of, dynamic=False)

    def save():
        tmp = ckpt + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
        os.replace(tmp, ckpt)
        export(model, cfg, os.path.join(out, "model.safetensors"))

    if step >= last:
        export(model, cfg, os.path.join(out, "model.safetensors"))
        print(f"nothing to do: at step {step}", file=sys.stderr)
        return
    proc = subprocess.Popen([a.bin, "train-data", "--recipe", a.recipe, "--corpus", a.corpus, "--out", out,
                             "--from-step", str(step), "--to-step", str(last), "--workers", str(a.workers)] + init_flag,
                            stdout=subprocess.PIPE, bufsize=1 << 20)
    q = queue.Queue(maxsize=64)
    threading.Thread(target=batch_reader, args=(proc, step, last, q), daemon=True).start()
    log_path = os.path.join(out, "loss.csv")
    new_log = not os.path.exists(log_path) or os.path.getsize(log_path) == 0
    log = open(log_path, "a")
    if new_log:
        log.write("step,tokens,rows,loss,grad_norm,lr,seconds\n")
    started = time.time()
    window_start, window_tokens = time.time(), 0
    pending = []  # (step, tokens, rows, loss tensor, grad-norm tensor, lr), written at each log
    model.train()
    while step < last:
        item = q.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            break
        s, ids, w = item
        ids, w = ids.to(dev, non_blocking=True), w.to(dev, non_blocking=True)
        lr = lr_at(step, t)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_fn(ids[0], ids[1], w)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"] if t["grad_clip"] > 0 else float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        rows, tokens = w.shape
        window_tokens += rows * tokens
        pending.append((step, tokens, rows, loss.detach(), norm.detach(), lr))
        out_of_time = a.max_minutes is not None and time.time() - started > a.max_minutes * 60
        if step % t["log_every"] == 0 or step == last or out_of_time:
            values = torch.stack([torch.stack([p[3], p[4]]) for p in pending]).float().cpu().tolist()
            elapsed = time.time() - started
            for (st, tk, rw, _, _, l), (lv, nv) in zip(pending, values):
                log.write(f"{st},{tk},{rw},{lv:.5f},{nv:.4f},{l:.6f},{elapsed:.2f}\n")
            if not all(math.isfinite(v) for v, _ in values):
                log.flush()
                sys.exit(f"the loss became non-finite by step {step}; the last checkpoint in {ckpt} is intact")
            secs = time.time() - window_start
            print(f"step {step:>6} loss {sum(v for v, _ in values) / len(values):.4f} lr {lr:.2e} "
                  f"{window_tokens / secs:.0f} tokens/s", file=sys.stderr, flush=True)
            pending, window_start, window_tokens = [], time.time(), 0
        if step % t["checkpoint_every"] == 0 or step == last or out_of_time:
            save()
            log.flush()
        if out_of_time:
            print(f"time limit reached at step {step}: checkpoint saved; rerun the same command to resume", file=sys.stderr)
            break
    proc.kill()
    log.close()
    done = "finished" if step >= t["steps"] else "stopped at"
    print(f"{done} step {step} of {t['steps']}; wrote {os.path.join(out, 'model.safetensors')}", file=sys.stderr)


if __name__ == "__main__":
    main()
