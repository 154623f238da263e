#!/usr/bin/env python3
"""The baseline HeadScope is timed against: a port of the detection loop of the paper's official code
(nightdessert/Retrieval_Head, retrieval_head_detection.py, LLMNeedleHaystackTester.evaluate_and_log,
decode and retrieval_calculate), run with transformers on the same GPU and weights.

What is ported, as the original does it (this is the part whose speed is compared):
  - the timed region of a test starts before the needle search (find_needle_idx: a Python scan of the
    prompt for a window overlapping the answer's token set by > 90 %) and ends after decoding and
    ROUGE scoring the response;
  - prefill of prompt[:-1] in one forward pass with a fused attention (the original loads the model
    with flash_attention_2; here flash_attention_2 when the flash-attn package is installed, else
    PyTorch SDPA, whose flash kernel serves bf16 causal attention on an H100);
  - decode: one forward per step with eager attention returning every layer's attention weights
    (the original's attn_mode="torch"), the next token = argmax of the logits, then a Python loop over
    every layer and head taking topk(1) of the head's last attention row and checking it against the
    needle span and the generated token (tensor comparisons that wait for the GPU per head);
  - the stop at a newline token ('<0x0A>' or id 144) is computed every step as in the original, but
    only stops decoding with --stop-at-newline: benchmarks decode a fixed number of steps on both
    sides (random weights never reach it anyway).

What is not copied: nothing here feeds HeadScope. The original's scoring (+1/span per hit without
de-duplicating positions, so a head re-reading one token scores again) is reproduced only as
`official_score`, for reference; HeadScope's eq. 1 scores are its own. Added for the comparison, and
not changing the loop's speed: the topk indices are kept (a list append of a tensor already computed)
and turned into argmax positions after the timed region.

Input: the prompts of `headscope bench --save-prompts` (the same token ids HeadScope ran), so timings
and argmax positions compare one to one:

    python bench/official_loop.py --model /root/ckpt/llama-2-7b --prompts OUT/prompts.json --json OUT/official.json
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import torch

REAL_NEEDLE = "eat a sandwich and sit in Dolores Park on a sunny day"


def rouge1_recall(reference, response):
    """ROUGE-1 recall: rouge_score's (stemmed) when installed, else plain lower-cased word overlap."""
    try:
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(reference, response)["rouge1"].recall * 100
    except ImportError:
        ref = reference.lower().split()
        got = set(response.lower().split())
        return 100.0 * sum(w in got for w in ref) / max(1, len(ref))


class OfficialLoop:
    """The original's per-test state and methods, minus the haystack building (the prompt is given)."""

    def __init__(self, model, enc, prefill_attn, stop_at_newline, real_needle):
        self.model_to_test = model
        self.real_needle = real_needle
        self.enc = enc
        self.layer_num = model.config.num_hidden_layers
        self.head_num = model.config.num_attention_heads
        self.prefill_attn = prefill_attn
        self.stop_at_newline = stop_at_newline

    def set_attn(self, name):
        # The original switches per call (attn_mode="torch" in its patched modeling files); in
        # transformers 5 the attention function is looked up from the config at every forward.
        if hasattr(self.model_to_test, "set_attn_implementation"):
            self.model_to_test.set_attn_implementation(name)
        else:
            self.model_to_test.config._attn_implementation = name

    def retrieval_calculate(self, attention_maxtrix, retrieval_score, inp, step_token, topk=1):
        kept = []
        for layer_idx in range(self.layer_num):
            for head_idx in range(self.head_num):
                values, idx = attention_maxtrix[layer_idx][0][head_idx][-1].topk(topk)
                kept.append(idx)
                for v, i in zip(values, idx):
                    if self.needle_start <= i < self.needle_end and inp.item() == self.prompt_ids[i].item():
                        retrieval_score[layer_idx][head_idx][0] += 1 / (self.needle_end - self.needle_start)
                        retrieval_score[layer_idx][head_idx][1] += step_token
                        break
        self.kept_argmax.append(kept)

    def decode(self, q_outputs, inp, decode_len):
        output, retrieval_score = [], [[[0, ""] for _ in range(self.head_num)] for _ in range(self.layer_num)]
        past_kv = q_outputs.past_key_values
        for step_i in range(decode_len):
            inp = inp.view(1, 1)
            outputs = self.model_to_test(input_ids=inp, past_key_values=past_kv, use_cache=True, output_attentions=True)
            past_kv = outputs.past_key_values
            inp = outputs.logits[0, -1].argmax()
            step_token = self.enc.convert_ids_to_tokens(inp.item())
            output.append(inp.item())
            self.retrieval_calculate(outputs.attentions, retrieval_score, inp, step_token)
            if (step_token == "<0x0A>" or inp.item() == 144) and self.stop_at_newline:
                break
        return output, retrieval_score

    def find_needle_idx(self, needle):
        needle_ids = self.enc(needle, add_special_tokens=False)["input_ids"]
        span_len = len(needle_ids)
        for i in range(len(self.prompt_ids)):
            token_span = self.prompt_ids[i : i + span_len]
            span_ids = set(token_span.tolist())
            overlap = float(len(span_ids.intersection(set(needle_ids)))) / len(set(needle_ids))
            if overlap > 0.9:
                return i, i + span_len
        return -1, -1

    def evaluate(self, prompt_ids, decode_len, answer_span, device):
        """One test: the original's timed region, with a breakdown. Returns a result dict."""
        input_ids = torch.tensor([prompt_ids])
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.kept_argmax = []
        sync()
        test_start_time = time.time()
        self.prompt_ids = input_ids[0, :]
        self.needle_start, self.needle_end = self.find_needle_idx(self.real_needle)
        found = (self.needle_start, self.needle_end)
        if self.needle_start < 0:  # another tokenizer than the original's: use the span HeadScope built
            self.needle_start, self.needle_end = answer_span
        t_needle = time.time()
        with torch.no_grad():
            self.set_attn(self.prefill_attn)
            q_outputs = self.model_to_test(input_ids=input_ids[:, :-1].to(device), use_cache=True, return_dict=True)
            sync()
            t_prefill = time.time()
            self.set_attn("eager")
            output, retrieval_score = self.decode(q_outputs, input_ids[:, -1].to(device), decode_len)
            t_decode = time.time()
            response = self.enc.decode(output, skip_special_tokens=True).strip()
        score = rouge1_recall(self.real_needle, response)
        test_end_time = time.time()
        # Outside the timed region: the kept topk indices as absolute positions.
        argmax = [[int(i.item()) for i in step] for step in self.kept_argmax]
        return dict(
            length=len(prompt_ids),
            seconds=test_end_time - test_start_time,
            find_needle_seconds=t_needle - test_start_time,
            prefill_seconds=t_prefill - t_needle,
            decode_seconds=t_decode - t_prefill,
            decode_step_ms=1e3 * (t_decode - t_prefill) / max(1, len(output)),
            steps=len(output),
            tokens=output,
            argmax=argmax,
            needle_span_found=list(found),
            rouge1_recall=score,
            official_score=sum(h[0] for layer in retrieval_score for h in layer),
        )


def load(model_dir, dtype, device, prefill_attn):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    enc = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))

    def from_pretrained(**kw):
        try:
            return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=prefill_attn, **kw)
        except TypeError:  # transformers 4 spells it torch_dtype
            return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, attn_implementation=prefill_attn, **kw)

    try:
        model = from_pretrained(device_map=device)  # straight to the GPU (needs accelerate)
    except (ValueError, ImportError):
        model = from_pretrained().to(device)
    return model.eval(), enc


def run_tests(prompts, evaluate, cuda, label):
    """Runs `evaluate(test)` on every test of a prompts file, with the GPU's peak memory per test; a test
    that runs out of memory is recorded as not fitting. Prints a line per test."""
    results = []
    for test in prompts["tests"]:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            r = evaluate(test)
            r["fits"] = True
        except torch.cuda.OutOfMemoryError as e:
            r = dict(length=len(test["prompt_ids"]), fits=False, error=str(e).splitlines()[0])
        if cuda:
            r["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            r["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        r["prompt_hash"] = test.get("prompt_hash")
        results.append(r)
        if r["fits"]:
            search = f"needle search {r['find_needle_seconds']:.3f} s, " if "find_needle_seconds" in r else ""
            print(f"{label} {r['length']} tokens: test {r['seconds']:.3f} s ({search}prefill {r['prefill_seconds']:.3f} s, "
                  f"decode {r['decode_step_ms']:.1f} ms/step x {r['steps']})"
                  + (f", peak reserved {r['peak_reserved_bytes'] / 2**30:.2f} GiB" if cuda else ""), flush=True)
        else:
            print(f"{label} {r['length']} tokens: does not fit: {r['error']}", flush=True)
    return results


def add_baseline_arguments(ap):
    """The flags every baseline takes (this one and bench/fixed_loop.py)."""
    ap.add_argument("--model", required=True, help="Hugging Face model directory (bench/make_checkpoint.py)")
    ap.add_argument("--prompts", required=True, help="prompts.json of headscope bench --save-prompts")
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--steps", type=int, help="decode steps (default: those of the prompts file)")
    ap.add_argument("--prefill-attn", default="auto", help="auto (flash_attention_2 if installed, else sdpa), sdpa, flash_attention_2")


def baseline_setup(args):
    """The prompts file, the decode steps, the prefill attention chosen, and whether the device is CUDA."""
    with open(args.prompts) as f:
        prompts = json.load(f)
    steps = args.steps or prompts["steps"]
    prefill_attn = args.prefill_attn
    if prefill_attn == "auto":
        prefill_attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return prompts, steps, prefill_attn, args.device.startswith("cuda")


def write_report(args, implementation, prefill_attn, cuda, **fields):
    """The results file of a baseline: what ran where, with `fields` (timings, tests) after it."""
    import transformers

    doc = dict(
        implementation=implementation,
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        gpu=torch.cuda.get_device_name() if cuda else None,
        prefill_attention=prefill_attn,
        torch=torch.__version__,
        transformers=transformers.__version__,
        memory_method="torch.cuda.max_memory_allocated / max_memory_reserved per test (the caching allocator's view; the CUDA context is not included)" if cuda else None,
        **fields,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_baseline_arguments(ap)
    ap.add_argument("--stop-at-newline", action="store_true", help="stop decoding at a newline token, as the original does")
    args = ap.parse_args()
    prompts, steps, prefill_attn, cuda = baseline_setup(args)

    t0 = time.time()
    model, enc = load(args.model, getattr(torch, args.dtype), args.device, prefill_attn)
    load_seconds = time.time() - t0
    loop = OfficialLoop(model, enc, prefill_attn, args.stop_at_newline, prompts.get("real_needle", REAL_NEEDLE))

    # Warm-up (CUDA context, kernels, allocator) on the first 64 tokens of the first prompt, untimed.
    first = prompts["tests"][0]
    t0 = time.time()
    loop.evaluate(first["prompt_ids"][:64], 2, (0, 1), args.device)
    warmup_seconds = time.time() - t0

    results = run_tests(prompts, lambda test: loop.evaluate(test["prompt_ids"], steps, tuple(test["answer_tokens"]), args.device), cuda, "official loop")
    write_report(
        args,
        "bench/official_loop.py (port of nightdessert/Retrieval_Head's detection loop)",
        prefill_attn,
        cuda,
        layers=loop.layer_num,
        heads=loop.head_num,
        load_seconds=load_seconds,
        warmup_seconds=warmup_seconds,
        tests=results,
    )


if __name__ == "__main__":
    sys.exit(main())
