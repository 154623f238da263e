#!/usr/bin/env python3
"""The lab model's fast trainer: the recipe's own batches (`headscope train-data`, built by the Rust
exercise generator, step for step as `headscope train` draws them) fed to Hugging Face's
LlamaForCausalLM in PyTorch with bf16 matrix products, fused SDPA attention, torch.compile and fused
AdamW. Measured for lab model v4's shape: 530-730 K tokens/s on a lent H100 over whole recipes (next
stages 1-2), about 4x the candle trainer's ~145 K; a fixed-shape probe reached 0.9-1.0 M on an H200
(throughput.py). For the same optimiser, schedule and loss:

- AdamW (beta 0.9/0.95, eps 1e-8), decoupled weight decay on matrices but the embeddings, global
  gradient-norm clipping, linear warm-up then cosine decay to `min_lr` (the recipe's `[train]`);
- the loss is the weighted mean next-token cross-entropy, each token weighted as the batch says
  (answers and their opening tokens count more);
- the starting weights are `headscope train --stop-at 0`'s: the Rust trainer's seeded initialisation,
  or the `--init-from` model's weights;
- with --deterministic, deterministic kernels (torch.use_deterministic_algorithms), so that a rerun on
  the same GPU and software gives the same weights; they halve the compiled step's speed (H100, 8 x
  2048 rows: 248 K against 481 K tokens/s, determinism_cost.py compile), so they are off by default and
  a rerun then agrees with the first run in its losses, not in every bit;
- checkpoints (model, optimiser, step) every `checkpoint_every` steps and at a time limit; rerunning the
  same command resumes where it stopped, with the same batches as an uninterrupted run;
- writes model.safetensors (f16, the names the Rust loader and transformers read) and loss.csv in the
  same columns as `headscope train`.

Usage (on the GPU machine, from the repository root):
  python3 crates/headscope-train/torch/train_lab.py --bin HEADSCOPE --recipe R --corpus C --out DIR \
      [--init-from MODEL_DIR] [--max-minutes M] [--stop-at STEP] [--keep-at STEP,STEP]
or a chain of stages in one process (the compiled graphs serve every stage of the same shape):
  python3 crates/headscope-train/torch/train_lab.py --bin HEADSCOPE --corpus C --max-minutes M \
      --stage runs/a:RECIPE_A --stage runs/b:RECIPE_B:runs/a
"""
import argparse, json, math, os, queue, shutil, struct, subprocess, sys, threading, time, tomllib

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
            ids, w = torch.from_numpy(ids), torch.from_numpy(w.copy())
            if torch.cuda.is_available():  # pinned pages copy to the GPU without a staging copy
                ids, w = ids.pin_memory(), w.pin_memory()
            out_q.put((step, ids, w))
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


def stage_finished(out, steps):
    """Whether OUT's loss log reached the recipe's last step."""
    try:
        with open(os.path.join(out, "loss.csv")) as f:
            rows = f.read().split()
        return len(rows) > 1 and int(rows[-1].split(",")[0]) >= steps
    except (OSError, ValueError):
        return False


class Session:
    """The model, its compiled loss and the device, kept across the stages of one chain: stages of one
    shape reuse the compiled graphs (compiling costs about 100 s per process), each stage loading its
    starting weights into the same parameters."""

    def __init__(self, compile_loss, device, f32_logits=False):
        self.compile_loss = compile_loss
        self.f32_logits = f32_logits
        self.dev = torch.device(device)
        self.model = self.cfg = self.loss_fn = None

    def load(self, out):
        cfg = LlamaConfig.from_pretrained(out)
        cfg._attn_implementation = "sdpa"
        shape = lambda c: {k: v for k, v in c.to_dict().items() if k not in ("_name_or_path", "transformers_version", "torch_dtype", "dtype")}
        if self.model is None or shape(cfg) != shape(self.cfg):
            self.cfg = cfg
            self.model = LlamaForCausalLM(cfg)
            self.model.tie_weights()
            self.model.to(self.dev)
            model = self.model

            f32_logits = self.f32_logits

            def loss_of(inputs, targets, weights):
                with torch.autocast(self.dev.type, dtype=torch.bfloat16):
                    if f32_logits:
                        hidden = model.model(input_ids=inputs).last_hidden_state
                    else:
                        logits = model(input_ids=inputs).logits
                if f32_logits:  # the LM head outside autocast: logits in f32 (TF32 products)
                    logits = F.linear(hidden.float(), model.lm_head.weight)
                nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
                return (nll * weights.reshape(-1)).sum() / weights.sum()

            # One static graph per row shape (a recipe has a few): with automatic dynamic shapes the
            # second shape recompiles symbolically, and the first such run trained at eager speed.
            self.loss_fn = torch.compile(loss_of, dynamic=False) if self.compile_loss else loss_of
        state = load_file(os.path.join(out, "model.safetensors"))
        with torch.no_grad():
            missing, unexpected = self.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        missing = [m for m in missing if not (self.cfg.tie_word_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            sys.exit(f"the starting weights do not fit the config: missing {missing}, unexpected {unexpected}")
        return self.model, self.cfg


def train_stage(session, a, recipe_path, out, init_from, deadline):
    """Trains one stage to its recipe's last step (or --stop-at, or the deadline). Returns whether it
    got there."""
    recipe = tomllib.load(open(recipe_path, "rb"))
    t = recipe["train"]  # every field required: the Rust recipe parser has no defaults for [train]
    last = min(a.stop_at, t["steps"]) if a.stop_at is not None else t["steps"]
    if a.stop_at is None and stage_finished(out, t["steps"]):
        print(f"{out}: finished earlier (step {t['steps']})", file=sys.stderr)
        return True
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "torch-checkpoint.pt")
    init_flag = ["--init-from", init_from] if init_from else []
    if not os.path.exists(ckpt):
        # The model files and the starting weights, from the Rust trainer (its seeded initialisation or
        # the earlier stage's weights; also its tokenizer, trained here unless one is in the folder).
        subprocess.run([a.bin, "train", "--recipe", recipe_path, "--corpus", a.corpus, "--out", out, "--stop-at", "0",
                        "--device", "cpu", "--workers", str(a.workers)] + init_flag, check=True)
    torch.manual_seed(0)
    model, cfg = session.load(out)
    dev = session.dev
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
    print(f"{out}: {n_params} parameters; training to step {last} of {t['steps']} on {torch.cuda.get_device_name() if dev.type == 'cuda' else dev}", file=sys.stderr)
    loss_fn = session.loss_fn

    def save():
        tmp = ckpt + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
        os.replace(tmp, ckpt)
        export(model, cfg, os.path.join(out, "model.safetensors"))

    if step >= last:
        export(model, cfg, os.path.join(out, "model.safetensors"))
        print(f"nothing to do: at step {step}", file=sys.stderr)
        return step >= t["steps"]
    proc = subprocess.Popen([a.bin, "train-data", "--recipe", recipe_path, "--corpus", a.corpus, "--out", out,
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
    window_start, window_tokens, window_wait = time.time(), 0, 0.0
    pending = []  # (step, tokens, rows, loss tensor, grad-norm tensor, lr), written at each log
    model.train()
    out_of_time = False
    while step < last:
        waiting = time.time()
        item = q.get()
        window_wait += time.time() - waiting
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
        out_of_time = deadline is not None and time.time() > deadline
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
                  f"{window_tokens / secs:.0f} tokens/s, {100 * window_wait / secs:.0f} % waiting for batches",
                  file=sys.stderr, flush=True)
            pending, window_start, window_tokens, window_wait = [], time.time(), 0, 0.0
        if step % t["checkpoint_every"] == 0 or step == last or out_of_time:
            save()
            log.flush()
        if step in a.keep_at:
            keep_copy(out, step, model, cfg)
        if out_of_time:
            print(f"time limit reached at step {step}: checkpoint saved; rerun the same command to resume", file=sys.stderr)
            break
    proc.kill()
    log.close()
    done = "finished" if step >= t["steps"] else "stopped at"
    print(f"{out}: {done} step {step} of {t['steps']}; wrote {os.path.join(out, 'model.safetensors')}", file=sys.stderr)
    return step >= last and not out_of_time


def keep_copy(out, step, model, cfg):
    """A model folder of this step's weights beside the stage (OUT/at-STEP), so that yardsticks can follow
    one stage's training: continuing a finished chain has cost held-out retrieval (docs/lab-v5)."""
    at = os.path.join(out, f"at-{step}")
    os.makedirs(at, exist_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(out, name)):
            shutil.copy(os.path.join(out, name), at)
    export(model, cfg, os.path.join(at, "model.safetensors"))
    print(f"kept step {step} in {at}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the headscope binary (any build: it only makes batches)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--recipe", help="one stage: its recipe (with --out and --init-from)")
    ap.add_argument("--out")
    ap.add_argument("--init-from")
    ap.add_argument("--stage", action="append", default=[], metavar="OUT:RECIPE[:INIT]",
                    help="a chain of stages in one process (repeat the flag), INIT being a model folder or an "
                         "earlier stage's OUT; a finished stage is skipped, a stopped one resumes")
    ap.add_argument("--max-minutes", type=float, help="for the whole chain")
    ap.add_argument("--stop-at", type=int)
    ap.add_argument("--keep-at", type=lambda v: {int(x) for x in v.split(",") if x}, default=set(),
                    help="steps (comma-separated) whose weights are also kept as OUT/at-STEP model folders")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--no-compile", action="store_true", help="eager mode (slower; for debugging)")
    ap.add_argument("--deterministic", action="store_true", help="deterministic kernels: bitwise-repeatable, half the speed")
    ap.add_argument("--f32-logits", action="store_true",
                    help="the LM head in f32, the rest in bf16 (measured: the same losses as bf16 logits, docs/lab-v4/README.md)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to check the trainer's plumbing on a small recipe")
    a = ap.parse_args()
    stages = []
    if a.recipe or a.out:
        if not (a.recipe and a.out):
            ap.error("--recipe and --out go together")
        stages.append((a.out, a.recipe, a.init_from))
    for spec in a.stage:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            ap.error(f"--stage {spec!r}: expected OUT:RECIPE[:INIT]")
        stages.append((parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None))
    if not stages:
        ap.error("nothing to train: give --recipe and --out, or --stage")

    torch.use_deterministic_algorithms(a.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    deadline = time.time() + a.max_minutes * 60 if a.max_minutes is not None else None
    session = Session(compile_loss=not a.no_compile, device=a.device, f32_logits=a.f32_logits)
    for out, recipe, init in stages:
        if not train_stage(session, a, recipe, out, init, deadline):
            break


if __name__ == "__main__":
    main()
