#!/usr/bin/env python3
"""HeadScope against Hugging Face transformers on the same random weights: the expected side.

For each case this script builds a random-weight model with transformers (eager attention), saves it
as a Hugging Face directory (sharded safetensors, a byte-level tokenizer.json), runs a prompt of
random token ids through it the way the paper's detection does (prefill prompt[:-1], then one decode
step per token starting with prompt[-1]), and writes what transformers computed to expected.json:
the greedy tokens, every step's logits, and per step, layer and query head the context position of
that head's attention peak (torch.argmax over the attention row, as an absolute position; in bf16 and
f16, where the returned weights are rounded, also every position that shares the maximum).

`headscope hf-agreement DIR/expected.json` then runs HeadScope on the saved directory, feeding the
same tokens (teacher forcing), and compares.

Now (CPU, tiny configs of each family, f32; the committed fixture
crates/headscope-cli/tests/fixtures/hf-agreement was made this way, so CI checks it without torch):
    python bench/hf_agreement.py --out runs/hf-agreement
    headscope hf-agreement runs/hf-agreement/*/expected.json
On the GPU machine (real configs, bf16, 4K context; see scripts/gpu-bench.sh):
    python bench/hf_agreement.py --config bench/configs/llama-2-7b/config.json --context 4096 \
        --dtype bfloat16 --device cuda --out /root/agree
On trained weights and real text instead (the lab model on a haystack: attention with clear peaks,
where random weights give near-flat rows whose top positions bf16 rounding reorders):
    python bench/hf_agreement.py --weights public/models/lab --text public/haystacks/kjv-john.txt \
        --context 4096 --dtype bfloat16 --device cuda --noise-floor --out /root/agree
"""

import argparse
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

# The same seeded weights and tokenizer as the benchmark checkpoints (this script's folder is on sys.path).
from make_checkpoint import build_model, byte_level_tokenizer, randomize

# Tiny configs, one per family HeadScope runs, each exercising its family's quirks: GQA everywhere,
# a sliding window shorter than the prompt (mistral), q/k/v biases and tied embeddings (qwen2),
# routed experts (mixtral), linear RoPE scaling (llama-rope).
COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=256, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
              bos_token_id=None, eos_token_id=None, pad_token_id=None)
TINY = {
    "llama": dict(model_type="llama", rope_theta=10000.0),
    "llama-rope": dict(model_type="llama", rope_theta=500000.0, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "mistral": dict(model_type="mistral", rope_theta=1000000.0, sliding_window=40),
    "qwen2": dict(model_type="qwen2", rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
    "mixtral": dict(model_type="mixtral", rope_theta=1000000.0, num_local_experts=4, num_experts_per_tok=2),
    # q/k RMSNorm per head, a head width that is not hidden / heads, tied embeddings.
    "qwen3": dict(model_type="qwen3", rope_theta=1000000.0, head_dim=16, tie_word_embeddings=True, use_sliding_window=False),
    # Fused qkv and gate_up projections, half the head width rotated, a sliding window, and LongRoPE
    # whose pre-training length (170) the decode crosses: the first steps rotate with the short
    # factors, the later ones with the long factors, as transformers switches them.
    "phi3": dict(model_type="phi3", rope_theta=10000.0, sliding_window=50, partial_rotary_factor=0.5,
                 original_max_position_embeddings=170,
                 rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.3], "long_factor": [1.7, 3.1]}),
    # Soft-capped attention and logits (caps low enough to bite), the query_pre_attn_scalar scale, norms
    # of 1 + weight around attention and MLP, sqrt(hidden)-scaled embeddings, GeGLU, sliding layers.
    "gemma2": dict(model_type="gemma2", rope_theta=10000.0, head_dim=16, query_pre_attn_scalar=24, sliding_window=40,
                   attn_logit_softcapping=5.0, final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh",
                   tie_word_embeddings=True),
    # Gemma-2's layout with q/k norms, no soft-capping, and two RoPEs: the sliding layers' base 10000, the
    # global layers' 1e6 with linear scaling x8.
    # Gemma-3's multimodal checkpoints (4B and up): the text model inside Gemma3ForConditionalGeneration,
    # saved under language_model.model beside a vision tower HeadScope does not read.
    "gemma3-multimodal": dict(model_type="gemma3", text_config=dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        vocab_size=300, max_position_embeddings=1024, rms_norm_eps=1e-5, query_pre_attn_scalar=24, sliding_window=40,
        sliding_window_pattern=2, rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
        bos_token_id=None, eos_token_id=None, pad_token_id=None), vision_config=dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=299, boi_token_index=297, eoi_token_index=298),
    # Mamba layers between attention layers (attention in layers 1 and 3, no positional encoding), a
    # mixture of experts every other layer with its router's probabilities not renormalised.
    "jamba": dict(model_type="jamba", num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                  expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
                  mamba_dt_rank=4, use_mamba_kernels=False),
    "gemma3": dict(model_type="gemma3_text", rope_theta=1000000.0, rope_local_base_freq=10000.0,
                   rope_scaling={"rope_type": "linear", "factor": 8.0}, head_dim=16, query_pre_attn_scalar=24,
                   sliding_window=40, sliding_window_pattern=2, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
}


def build(config, dtype, device, seed):
    """The random-weight model, built and drawn on `device` in `dtype`, with eager attention (the
    implementation that returns attention weights)."""
    config._attn_implementation = "eager"
    model = build_model(config, dtype, device, attn_implementation="eager")
    randomize(model, seed)
    return model


@torch.no_grad()
def run(model, prompt, steps, device, keep_logits, forced=None):
    """Prefill prompt[:-1], then `steps` greedy decode steps with eager attention returned (fed
    `forced` tokens instead of its own choices when given)."""
    ids = torch.tensor([prompt], device=device)
    t0 = time.time()
    out = model(input_ids=ids[:, :-1], use_cache=True)
    past = out.past_key_values
    inp = prompt[-1]
    tokens, argmax, ties, logits_kept, top = [], [], [], [], []
    for step in range(steps):
        out = model(input_ids=torch.tensor([[inp]], device=device), past_key_values=past, use_cache=True, output_attentions=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
        tok = int(logits.argmax())
        position = len(prompt) - 1 + step  # the position of the token fed at this step
        row = []
        for layer, att in enumerate(out.attentions):  # [1, heads, 1, keys]; a sliding cache may hold only recent keys
            keys = att.shape[-1]
            first = position + 1 - keys
            weights = att[0, :, -1, :]
            row.extend(int(first + j) for j in weights.float().argmax(dim=-1).tolist())
            # In bf16/f16 the returned weights are rounded, and several positions can share the maximum:
            # transformers cannot tell them apart, so any of them counts as its argmax.
            tied = weights == weights.max(dim=-1, keepdim=True).values
            for head in (tied.sum(dim=-1) > 1).nonzero().flatten().tolist():
                positions = (first + tied[head].nonzero().flatten()).tolist()[:64]
                ties.append([step, layer * weights.shape[0] + head, positions])
        argmax.append(row)
        tokens.append(tok)
        if keep_logits:
            logits_kept.append([round(x, 6) for x in logits.cpu().tolist()])
        values, indices = logits.topk(min(8, logits.numel()))
        top.append([[int(i), round(float(v), 6)] for v, i in zip(values.cpu(), indices.cpu())])
        inp = tok if forced is None else forced[step]
    return dict(tokens=tokens, argmax=argmax, argmax_ties=ties, logits=logits_kept or None, top_logits=top, seconds=time.time() - t0)


def noise_floor(model, prompt, args, half):
    """How often transformers agrees with itself when the same weights run in f32 instead of the half
    precision: the argmax agreement that bf16/f16 rounding alone allows (teacher-forced on the
    half-precision tokens), and likewise for greedy tokens and logits; with the f32 run's argmax
    positions, tokens and logits, so that HeadScope's half-precision run can be held against the same
    f32 reference. None when the f32 copy does not fit."""
    keep_logits = half["logits"] is not None
    try:
        model.float()
        full = run(model, prompt, args.steps, args.device, keep_logits, forced=half["tokens"])
    except torch.cuda.OutOfMemoryError:
        return None
    ties = {(s, h): set(p) for s, h, p in half["argmax_ties"]}
    total = strict = tied = 0
    for s, (a, b) in enumerate(zip(half["argmax"], full["argmax"])):
        for h, (x, y) in enumerate(zip(a, b)):
            total += 1
            strict += x == y
            tied += x == y or y in ties.get((s, h), ())
    if keep_logits:
        logit_diff = max(abs(x - y) for a, b in zip(half["logits"], full["logits"]) for x, y in zip(a, b))
    else:  # the half-precision run's top logits, looked up in the f32 run's top (missing ones skipped)
        logit_diff = max((abs(v - dict(map(tuple, b)).get(i, v)) for a, b in zip(half["top_logits"], full["top_logits"]) for i, v in a),
                         default=0.0)
    return dict(argmax_total=total, argmax_equal_strict=strict, argmax_equal=tied,
                tokens_equal=sum(x == y for x, y in zip(half["tokens"], full["tokens"])), max_logit_difference=logit_diff,
                f32_argmax=full["argmax"], f32_tokens=full["tokens"], f32_logits=full["logits"], f32_top_logits=full["top_logits"])


def load_trained(path, dtype, device):
    """A trained model directory, in `dtype` on `device`, with eager attention."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    except TypeError:  # transformers 4 spells it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, attn_implementation="eager")
    return model.to(device).eval()


def text_prompt(path, tokenizer_json, length):
    """The first `length` token ids of a text file."""
    from tokenizers import Tokenizer

    with open(path) as f:
        ids = Tokenizer.from_file(tokenizer_json).encode(f.read()).ids
    if len(ids) < length:
        sys.exit(f"{path}: {len(ids)} tokens, fewer than --context {length}")
    return ids[:length]


def one_case(name, config, args, tokenizer_json):
    dtype = getattr(torch, args.dtype)
    text = config.get_text_config()  # the language model's settings (multimodal configs nest them)
    out_dir = os.path.join(args.out, name)
    model_dir = os.path.join(out_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    model = load_trained(args.weights, dtype, args.device) if args.weights else build(config, dtype, args.device, args.seed)
    # Shards with an index, as full-size checkpoints come (tiny ones get several shards too).
    shard = "2GB" if args.config else "40KB"
    model.save_pretrained(model_dir, max_shard_size=shard, safe_serialization=True)
    with open(tokenizer_json, "rb") as src, open(os.path.join(model_dir, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    if args.text:
        prompt = text_prompt(args.text, tokenizer_json, args.context)
    else:
        g = torch.Generator().manual_seed(args.seed + 1)
        # Ids of the byte-level tokenizer at most (a multimodal vocabulary ends in image tokens that a
        # text-only prompt must not hold).
        prompt = torch.randint(0, min(text.vocab_size, 256), (args.context,), generator=g).tolist()
    keep_logits = text.vocab_size * args.steps <= 4_000_000
    result = run(model, prompt, args.steps, args.device, keep_logits)
    noise = noise_floor(model, prompt, args, result) if args.noise_floor and dtype != torch.float32 else None
    expected = dict(
        format="headscope-hf-agreement/1",
        case=name,
        model_type=config.model_type,
        model_dir="model",
        # Rows of the argmax grid: the layers that attend (a hybrid's Mamba layers have no heads).
        layers=len(result["argmax"][0]) // text.num_attention_heads,
        heads=text.num_attention_heads,
        dtype=args.dtype,
        device=args.device,
        transformers=transformers.__version__,
        torch=torch.__version__,
        prompt_ids=prompt,
        steps=args.steps,
        noise_floor=noise,
        **result,
    )
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)
    if noise:
        print(f"{name}: transformers {args.dtype} vs f32 on the same weights: argmax {noise['argmax_equal']}/{noise['argmax_total']} "
              f"({noise['argmax_equal_strict']} without ties), greedy tokens {noise['tokens_equal']}/{args.steps}, "
              f"max |logit diff| {noise['max_logit_difference']:.3g}")
    print(f"{name}: {config.model_type} {text.num_hidden_layers}x{text.num_attention_heads} heads, "
          f"{args.context} prompt tokens, {args.steps} steps, {result['seconds']:.2f}s -> {out_dir}/expected.json")
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder: one subfolder (model/ + expected.json) per case")
    ap.add_argument("--config", action="append", help="a real config.json (repeatable); default: the tiny configs")
    ap.add_argument("--cases", default=",".join(TINY), help="tiny cases to run (comma-separated)")
    ap.add_argument("--context", type=int, default=160, help="prompt tokens")
    ap.add_argument("--steps", type=int, default=20, help="decode steps")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-floor", action="store_true",
                    help="in bf16/f16, also run the weights in f32 and record how often transformers agrees with itself")
    ap.add_argument("--tokenizer", help="tokenizer.json to ship with each model (default: a byte-level one, or --weights')")
    ap.add_argument("--weights", help="a trained model directory to compare on, instead of random weights")
    ap.add_argument("--text", help="a text file whose first --context tokens are the prompt, instead of random ids")
    ap.add_argument("--layers", type=int,
                    help="keep only the first N layers of a --config (real widths, heads and experts, less memory: "
                         "Mixtral-8x7B's 93 GB do not fit one 80 GB GPU with an f32 noise floor beside it)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.tokenizer and args.weights:
        args.tokenizer = os.path.join(args.weights, "tokenizer.json")
    tokenizer_json = args.tokenizer or os.path.join(args.out, "tokenizer.json")
    if not args.tokenizer:
        byte_level_tokenizer(tokenizer_json)
    if args.weights:
        name = os.path.basename(os.path.abspath(args.weights)) + ("-text" if args.text else "")
        one_case(name, AutoConfig.from_pretrained(args.weights), args, tokenizer_json)
    elif args.config:
        for path in args.config:
            config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(path)))
            name = os.path.basename(os.path.dirname(os.path.abspath(path)))
            if args.layers and args.layers < config.num_hidden_layers:
                config.num_hidden_layers = args.layers
                if getattr(config, "layer_types", None):
                    config.layer_types = config.layer_types[:args.layers]
                name = f"{name}-{args.layers}-layers"
            one_case(name, config, args, tokenizer_json)
    else:
        for name in args.cases.split(","):
            # A multimodal config's own fields replace the common ones (its text model's are in text_config).
            spec = dict(TINY[name]) if "text_config" in TINY[name] else dict(COMMON, **TINY[name])
            model_type = spec.pop("model_type")
            config = transformers.AutoConfig.for_model(model_type, **spec)
            one_case(name, config, args, tokenizer_json)


if __name__ == "__main__":
    sys.exit(main())
