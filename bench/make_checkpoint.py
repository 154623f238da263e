#!/usr/bin/env python3
"""A random-weight checkpoint at a real model's shape, for timing and agreement runs without a hub.

Builds the model of a config.json (bench/configs/<name>/config.json: the published Hugging Face
configs of the paper's table 1) with transformers, fills it with seeded random weights, and
save_pretrained's it as sharded safetensors with a tokenizer.json next to it:

    python bench/make_checkpoint.py --config bench/configs/llama-2-7b/config.json --out /root/ckpt/llama-2-7b

Token ids. The real tokenizers cannot be fetched, and a random model does not care which text its ids
stand for, so the checkpoint ships the lab model's tokenizer (public/models/lab/tokenizer.json: 4096
byte-level BPE tokens, ids 0..4095). Every table-1 vocabulary is larger (32000 to 152064), so each lab
id is a valid id of the model: prompts built with that tokenizer (headscope bench builds a real NIAH
prompt from the KJV haystack) use the first 4096 rows of the embedding, and both HeadScope and the
PyTorch baseline read the very same ids (bench/official_loop.py takes them from headscope bench
--save-prompts). Ids the random model generates past 4095 decode to nothing; neither side's timing
depends on it. --tokenizer byte-level ships a 256-token byte-level tokenizer instead.

Memory and disk: the model is built on --device in --dtype (bf16: 2 bytes per parameter). Llama-2-7B
needs 13.5 GB of GPU memory and disk; Yi-34B-200K 69 GB (fits an 80 GB GPU).

--stream, for checkpoints larger than the machine can hold twice (Mixtral-8x7B: 93 GB, against the
128 GB of RAM and 64 GB of disk of an nvidia-h200 machine): transformers builds and saves the model with
one layer only (a hybrid: one period of its layers, Jamba's 8), which gives the checkpoint's tensor
names, shapes and dtypes in its save format (for Mixtral, transformers 5 splits its fused expert
tensors back into per-expert ones); then each layer's
tensors are drawn on --device by the same rule as randomize() and written as one shard, so at most one
layer is in memory. Same distributions as the whole-model path, not the same numbers. Shards that do
not fit on --out's disk (keeping --keep-free-gb free) go to --overflow (e.g. /dev/shm) with a symbolic
link in --out, so the model directory looks like any other.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import torch


@torch.no_grad()
def randomize(model, seed):
    """Seeded weights with unit-scale activations. Hugging Face's own init (std 0.02) makes attention
    nearly uniform, so argmax positions would hinge on rounding noise; here every matrix has std
    1/sqrt(fan-in) (q_proj twice that, for sharper attention peaks), embeddings std 1, norm weights
    1 + 0.1 N(0,1), biases 0.1 N(0,1). The generator lives on the parameters' device, so a 7B model
    is drawn on the GPU in seconds; on the CPU the numbers are those of a CPU generator."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        p.copy_(draw(name, p.shape, p.dtype, g, device))


def draw(name, shape, dtype, g, device):
    """The tensor called `name` by randomize()'s rule (also for --stream, which has names and shapes
    but no model): drawn from `g` on `device`, returned in `dtype`."""
    if len(shape) == 1:
        base = 1.0 if "norm" in name else 0.0
        v = base + 0.1 * torch.randn(shape, generator=g, device=device)
    elif "embed_tokens" in name:
        v = torch.randn(shape, generator=g, device=device)
    else:
        # fan-in is the last dimension (also for fused expert tensors [experts, out, in])
        v = torch.randn(shape, generator=g, device=device) / math.sqrt(shape[-1])
        if "q_proj" in name:
            v = v * 2.0
    return v.to(dtype)


def stream_checkpoint(config, args, dtype):
    """Writes the checkpoint of `config` a layer per shard (see --stream); returns the parameter count."""
    import copy
    import re
    import tempfile

    from safetensors import safe_open
    from safetensors.torch import save_file

    # The template: one layer, or for a hybrid whose layers differ by a period (Jamba: attention every 8th
    # layer, experts every 2nd) one period of layers, whose names and shapes repeat.
    period = 1
    for field in ("attn_layer_period", "expert_layer_period"):
        if getattr(config, field, None):
            period = math.lcm(period, getattr(config, field))
    period = min(period, config.num_hidden_layers)
    one = copy.deepcopy(config)
    one.num_hidden_layers = period
    model = build_model(one, dtype, args.device)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        layout = []  # (name, shape, dtype) as transformers saves them
        for f in sorted(os.listdir(tmp)):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(tmp, f), framework="pt") as st:
                    for name in st.keys():
                        t = st.get_slice(name)
                        layout.append((name, tuple(t.get_shape()), t.get_dtype()))
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    per_layer = [[(re.sub(rf"^model\.layers\.{k}\.", "", n), shape) for n, shape, _ in layout if n.startswith(f"model.layers.{k}.")]
                 for k in range(period)]
    others = [(n, shape) for n, shape, _ in layout if not n.startswith("model.layers.")]
    if not all(per_layer) or sum(map(len, per_layer)) + len(others) != len(layout):
        sys.exit(f"unexpected tensor names in the template save: {[n for n, _, _ in layout]}")

    weight_map, total, params = {}, 0, 0
    shards = config.num_hidden_layers + 1
    for index in range(shards):
        if index < config.num_hidden_layers:
            names = [(f"model.layers.{index}.{n}", shape) for n, shape in per_layer[index % period]]
        else:
            names = others
        g = torch.Generator(device=args.device).manual_seed(args.seed * 100003 + index)
        tensors = {n: draw(n, shape, dtype, g, args.device).cpu() for n, shape in names}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        target = args.out
        if shutil.disk_usage(args.out).free < size * 1.05 + args.keep_free_gb * 1e9:
            if not args.overflow:
                sys.exit(f"{args.out}: no room for shard {index + 1} ({size / 1e9:.1f} GB); pass --overflow DIR")
            os.makedirs(args.overflow, exist_ok=True)
            if shutil.disk_usage(args.overflow).free < size * 1.05:
                sys.exit(f"{args.overflow}: no room for shard {index + 1} ({size / 1e9:.1f} GB) either")
            target = args.overflow
        save_file(tensors, os.path.join(target, file), metadata={"format": "pt"})
        if target != args.out:
            os.symlink(os.path.join(os.path.abspath(target), file), os.path.join(args.out, file))
        for n, t in tensors.items():
            weight_map[n] = file
            params += t.numel()
        total += size
        del tensors
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config.save_pretrained(args.out)
    return params


def byte_level_tokenizer(path):
    """A 256-token byte-level tokenizer.json (no merges): valid ids in every vocabulary."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(path)


def tokenizer_vocab(path):
    with open(path) as f:
        t = json.load(f)
    ids = list(t.get("model", {}).get("vocab", {}).values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def build_model(config, dtype, device, attn_implementation=None):
    """The model of `config` in `dtype`, its tensors created on `device` (no CPU copy first)."""
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **extra)
        except TypeError:  # transformers 4 spells it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype, **extra)
    return model.eval()


def config_dir_for_transformers(config_json):
    """The folder of `config_json`, or a temporary copy that older transformers accept. Transformers 5.17
    (the GPU machine's) validates Phi-3's longrope parameters before moving the top-level
    `original_max_position_embeddings` into them, and refuses the published config ("Missing required
    keys ... original_max_position_embeddings"); 5.25 moves it first. The copy puts it there itself."""
    with open(config_json) as f:
        raw = json.load(f)
    scaling = raw.get("rope_scaling") or {}
    if scaling.get("type", scaling.get("rope_type")) in ("su", "longrope") and "original_max_position_embeddings" in raw \
            and "original_max_position_embeddings" not in scaling:
        scaling["original_max_position_embeddings"] = raw["original_max_position_embeddings"]
        folder = tempfile.mkdtemp(prefix="hs-config-")
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(raw, f)
        return folder
    return os.path.dirname(os.path.abspath(config_json))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a config.json (e.g. bench/configs/llama-2-7b/config.json)")
    ap.add_argument("--out", required=True, help="the model directory to write")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", default="public/models/lab/tokenizer.json", help="tokenizer.json to ship, or byte-level")
    ap.add_argument("--shard-size", default="5GB", help="max_shard_size of save_pretrained")
    ap.add_argument("--stream", action="store_true", help="draw and write one layer at a time (see above)")
    ap.add_argument("--overflow", help="with --stream: a folder for the shards that do not fit on --out's disk")
    ap.add_argument("--keep-free-gb", type=float, default=2.0, help="with --stream: disk space to leave free under --out")
    args = ap.parse_args()

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(config_dir_for_transformers(args.config))
    # The language model's settings (a multimodal config such as Gemma-3-4B's keeps them in text_config).
    text = config.get_text_config()
    dtype = getattr(torch, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    if args.tokenizer == "byte-level":
        tokenizer_json = os.path.join(args.out, "tokenizer.json")
        byte_level_tokenizer(tokenizer_json)
    else:
        tokenizer_json = args.tokenizer
    vocab = tokenizer_vocab(tokenizer_json)
    if vocab > text.vocab_size:
        sys.exit(f"the tokenizer has {vocab} tokens but the model's vocab_size is {text.vocab_size}")

    t0 = time.time()
    if args.stream:
        params = stream_checkpoint(config, args, dtype)
        if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(args.out, "tokenizer.json")):
            shutil.copyfile(tokenizer_json, os.path.join(args.out, "tokenizer.json"))
        print(
            f"{args.out}: {config.model_type} {text.num_hidden_layers} layers x {text.num_attention_heads} heads, "
            f"{params / 1e9:.2f} B parameters, {args.dtype}; drawn and written a layer at a time in {time.time() - t0:.1f} s "
            f"on {args.device}; tokenizer {os.path.basename(tokenizer_json)} ({vocab} ids of {text.vocab_size})"
        )
        return
    model = build_model(config, dtype, args.device)
    params = sum(p.numel() for p in model.parameters())
    need = params * torch.finfo(dtype).bits // 8
    free = shutil.disk_usage(args.out).free
    if need * 1.05 > free:
        sys.exit(f"{args.out}: {need / 1e9:.1f} GB of weights but {free / 1e9:.1f} GB free on that disk")
    randomize(model, args.seed)
    if args.device.startswith("cuda") and need > torch.cuda.get_device_properties(args.device).total_memory // 2:
        # save_pretrained converts tensors on their device (transformers 5 splits Mixtral's fused expert
        # tensors back into per-expert ones there): on an H200 the 93 GB of Mixtral-8x7B left no room for
        # those copies. Drawn on the GPU (fast), saved from host memory.
        model.to("cpu")
        torch.cuda.empty_cache()
    t1 = time.time()
    model.save_pretrained(args.out, max_shard_size=args.shard_size, safe_serialization=True)
    if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(args.out, "tokenizer.json")):
        shutil.copyfile(tokenizer_json, os.path.join(args.out, "tokenizer.json"))
    t2 = time.time()
    print(
        f"{args.out}: {config.model_type} {text.num_hidden_layers} layers x {text.num_attention_heads} heads, "
        f"{params / 1e9:.2f} B parameters, {args.dtype}; built in {t1 - t0:.1f} s on {args.device}, saved in {t2 - t1:.1f} s; "
        f"tokenizer {os.path.basename(tokenizer_json)} ({vocab} ids of {text.vocab_size})"
    )


if __name__ == "__main__":
    main()
