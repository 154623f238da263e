#!/usr/bin/env python3
"""The second baseline HeadScope is timed against (issue 24): the detection loop in PyTorch with the
obvious fixes to the official code's loop (bench/official_loop.py), on the same GPU, weights and prompts:

  - prefill of prompt[:-1] with PyTorch SDPA (flash_attention_2 when installed) asking for the last
    position's logits only (`logits_to_keep=1`), into a static KV cache sized for the whole test;
  - decode steps with eager attention (the weights are needed), the next token chosen on the GPU and fed
    back without a host round trip;
  - each step's argmax position for every layer and head taken on the GPU in one stacked op, kept on the
    GPU; one host synchronisation per test, after the last step; eq. 1 hits and ROUGE-1 recall are then
    scored on the host from those positions (inside the timed region, as HeadScope's per-test time
    includes its scoring).

Input and output as bench/official_loop.py: the prompts of `headscope bench --save-prompts`, results as
JSON (per test: seconds, prefill, decode step, tokens, argmax) for bench/bench_report.py.

    python bench/fixed_loop.py --model /root/ckpt/llama-2-7b --prompts OUT/prompts.json --json OUT/fixed.json
"""

import argparse
import sys
import time

import torch

from official_loop import REAL_NEEDLE, add_baseline_arguments, baseline_setup, load, rouge1_recall, run_tests, write_report


def set_attn(model, name):
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def evaluate(model, enc, prompt_ids, steps, answer_span, device, prefill_attn, real_needle):
    """One test: prefill, `steps` greedy decode steps, eq. 1 hits and recall. Returns a result dict."""
    from transformers import StaticCache

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.time()
    ids = torch.tensor([prompt_ids], device=device)
    cache = StaticCache(config=model.config, max_cache_len=len(prompt_ids) + steps)
    with torch.no_grad():
        set_attn(model, prefill_attn)
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
        sync()
        t_prefill = time.time()
        set_attn(model, "eager")
        inp = ids[:, -1:]
        tokens, argmax = [], []
        for step in range(steps):
            position = len(prompt_ids) - 1 + step
            out = model(
                input_ids=inp,
                past_key_values=cache,
                use_cache=True,
                output_attentions=True,
                cache_position=torch.tensor([position], device=device),
                logits_to_keep=1,
            )
            inp = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(inp[0, 0])
            # [layers, heads] argmax over this step's context, on the GPU.
            argmax.append(torch.stack([a[0, :, -1, : position + 1] for a in out.attentions]).argmax(-1))
        tokens = torch.stack(tokens).cpu().tolist()  # the one synchronisation
        argmax = torch.stack(argmax).cpu().tolist()
        t_decode = time.time()
    start, end = answer_span
    hits = set()
    for step, (token, at) in enumerate(zip(tokens, argmax)):
        for layer, row in enumerate(at):
            for head, j in enumerate(row):
                if start <= j < end and prompt_ids[j] == token:
                    hits.add((layer, head, j))
    response = enc.decode(tokens, skip_special_tokens=True).strip()
    score = rouge1_recall(real_needle, response)
    t_end = time.time()
    return dict(
        length=len(prompt_ids),
        seconds=t_end - t0,
        prefill_seconds=t_prefill - t0,
        decode_seconds=t_decode - t_prefill,
        decode_step_ms=1e3 * (t_decode - t_prefill) / max(1, steps),
        steps=steps,
        tokens=tokens,
        argmax=[[j for row in at for j in row] for at in argmax],
        hits=len(hits),
        rouge1_recall=score,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_baseline_arguments(ap)
    args = ap.parse_args()
    prompts, steps, prefill_attn, cuda = baseline_setup(args)
    real_needle = prompts.get("real_needle", REAL_NEEDLE)
    t0 = time.time()
    model, enc = load(args.model, getattr(torch, args.dtype), args.device, prefill_attn)
    load_seconds = time.time() - t0
    first = prompts["tests"][0]
    t0 = time.time()
    evaluate(model, enc, first["prompt_ids"][:64], 2, (0, 1), args.device, prefill_attn, real_needle)
    warmup_seconds = time.time() - t0
    results = run_tests(
        prompts,
        lambda test: evaluate(model, enc, test["prompt_ids"], steps, tuple(test["answer_tokens"]), args.device, prefill_attn, real_needle),
        cuda,
        "fixed loop",
    )
    write_report(
        args,
        "bench/fixed_loop.py (the detection loop with SDPA prefill of the last logits, a static cache and on-GPU argmax)",
        prefill_attn,
        cuda,
        load_seconds=load_seconds,
        warmup_seconds=warmup_seconds,
        tests=results,
    )


if __name__ == "__main__":
    sys.exit(main())
