#!/usr/bin/env python3
"""Regenerate HGRN2 golden fixtures from the reference implementation (fla).

For each model spec this writes one folder in the format of shared/fixtures/tiny-a:

  config.json                      HGRN2Config.save_pretrained (+ the fields a spec leaves null)
  model.safetensors                the checkpoint (F32, BF16 or F16); or, with shards > 1,
  model-0000i-of-0000n.safetensors + model.safetensors.index.json
  golden.safetensors               see FORMAT below
  golden.json                      provenance and agreement numbers

FORMAT of golden.safetensors (all float tensors F32, ids I32):
  short_ids [2,48], short_logits [2,48,V]     fla forward in float32 on the GPU (T <= 64, so fla's
                                              layer picks its fused_recurrent kernel)
  long_ids [1,200], long_logits [1,200,V]     fla forward, chunked kernel (T > 64)
  ref64_short_logits, ref64_long_logits       independent float64 token-by-token implementation
                                              of shared/HGRN2.md (class Ref64 below), stored as F32
  short_state_{l} [2,H,dv,dk]                 fla's recurrent state after the short prompts
  short_conv_{q,f,i}_{l} [2,D,K]              fla's conv windows after the short prompts (short conv only)
  greedy_ids [2,24]                           float64 greedy continuation of short_ids, every EOS id banned

Weights and prompts are drawn with numpy from the spec's seed. Weights are rounded to the
checkpoint dtype first; the float64 reference and the fla float32 run both use the weights AS
STORED (rounded, then upcast), so the golden numbers describe the file.

Short prompts are redrawn (per row, up to --max-tries times, deterministically from the seed) until
the float64 greedy continuation has a smallest top-1/top-2 log-prob margin >= --min-margin, so the
greedy ids are a robust test; golden.json records the margins and the number of tries.

The numpy parts (weights, files, float64 reference, greedy) run without torch: --no-fla makes a
CPU-only dry run (no fla tensors in golden.safetensors). Never uses fla's generate().

Usage:
  python make_fixtures.py --out DIR --preset all
  python make_fixtures.py --out DIR --preset tiny-a u-k3-nolb
  python make_fixtures.py --out DIR --spec '{"name": "x", "vocab_size": 300, "hidden_size": 64, ...}'
  python make_fixtures.py --list
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import struct
import sys
import time
import traceback

import numpy as np

# ----------------------------------------------------------------------------------------------
# Specs and presets
# ----------------------------------------------------------------------------------------------

DEFAULT_SPEC = dict(
    name=None,
    vocab_size=512,
    hidden_size=128,
    num_hidden_layers=2,
    num_heads=None,          # give num_heads and/or expand_ratio; a null one stays null in config.json
    expand_ratio=None,
    use_short_conv=False,
    conv_size=4,
    use_lower_bound=True,
    tie_word_embeddings=False,
    hidden_ratio=4,
    intermediate_size=None,  # null: fla's rule 256 * ceil(int(D * hidden_ratio * 2/3) / 256)
    norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,          # int or list of ints; all are banned in the greedy continuation
    pad_token_id=None,
    seed=0,
    dtype="F32",             # checkpoint dtype: F32, BF16, F16
    shards=1,                # > 1: model-0000i-of-0000n.safetensors + model.safetensors.index.json
    short_batch=2,
    short_len=48,
    long_len=200,
    greedy_steps=24,
)

PRESETS = {
    # same shapes as shared/fixtures/tiny-a and tiny-conv, new seeds
    "tiny-a": dict(vocab_size=512, hidden_size=128, num_hidden_layers=3, num_heads=4, expand_ratio=32,
                   use_short_conv=False, use_lower_bound=True, tie_word_embeddings=False, seed=21),
    "tiny-conv": dict(vocab_size=384, hidden_size=128, num_hidden_layers=2, num_heads=2, expand_ratio=64,
                      use_short_conv=True, conv_size=4, use_lower_bound=True, tie_word_embeddings=True,
                      seed=22),
    # "unseen" shapes and options
    "u-k3-nolb": dict(vocab_size=1000, hidden_size=96, num_hidden_layers=2, num_heads=3, expand_ratio=32,
                      use_short_conv=True, conv_size=3, use_lower_bound=False, tie_word_embeddings=False,
                      seed=31),
    "u-dk15-bf16": dict(vocab_size=777, hidden_size=60, num_hidden_layers=3, num_heads=4, expand_ratio=None,
                        use_short_conv=True, conv_size=2, use_lower_bound=True, tie_word_embeddings=True,
                        intermediate_size=200, dtype="BF16", seed=32),
    # hidden_ratio 1 keeps the file under 3 MB and exercises the null-intermediate_size rule with a
    # hidden_ratio other than 4: int(256 * 1 * 2/3) = 170 -> 256
    "u-sharded-f16": dict(vocab_size=640, hidden_size=256, num_hidden_layers=2, num_heads=None, expand_ratio=128,
                          use_short_conv=False, use_lower_bound=True, tie_word_embeddings=False,
                          hidden_ratio=1, dtype="F16", shards=2, seed=33),
    "u-k5-eoslist": dict(vocab_size=500, hidden_size=64, num_hidden_layers=4, num_heads=1, expand_ratio=64,
                         use_short_conv=True, conv_size=5, use_lower_bound=True, tie_word_embeddings=False,
                         eos_token_id=[2, 3], seed=34),
}


def full_spec(name, overrides):
    s = dict(DEFAULT_SPEC)
    unknown = set(overrides) - set(DEFAULT_SPEC)
    if unknown:
        raise ValueError(f"unknown spec fields: {sorted(unknown)}")
    s.update(overrides)
    if name is not None:
        s["name"] = name
    if not s["name"]:
        raise ValueError("a spec needs a name")
    if s["num_heads"] is None and s["expand_ratio"] is None:
        raise ValueError("give num_heads and/or expand_ratio")
    if s["dtype"] not in ("F32", "BF16", "F16"):
        raise ValueError(f"dtype must be F32, BF16 or F16, not {s['dtype']}")
    return s


def derived(s):
    """Sizes exactly as fla's HGRN2Attention / GatedMLP compute them."""
    D = s["hidden_size"]
    if s["expand_ratio"] is not None:
        dk = s["expand_ratio"]
        H = D // dk
    else:
        H = s["num_heads"]
        dk = D // H
    assert H * dk == D, f"H*dk must equal D (H={H}, dk={dk}, D={D})"
    dv = D // H
    I = s["intermediate_size"]
    if I is None:
        hr = s["hidden_ratio"] if s["hidden_ratio"] is not None else 4
        I = int(D * hr * 2 / 3)
        I = 256 * ((I + 256 - 1) // 256)
    eos = s["eos_token_id"]
    eos_ids = [] if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [eos])
    return dict(D=D, H=H, dk=dk, dv=dv, I=I, V=s["vocab_size"], L=s["num_hidden_layers"],
                K=s["conv_size"], eos_ids=eos_ids)


# ----------------------------------------------------------------------------------------------
# Weights (numpy), dtype rounding, safetensors I/O
# ----------------------------------------------------------------------------------------------

def weight_shapes(s):
    d = derived(s)
    D, V, L, I, K = d["D"], d["V"], d["L"], d["I"], d["K"]
    shapes = {"model.embeddings.weight": (V, D)}
    if s["use_lower_bound"]:
        shapes["model.lower_bounds"] = (L, D)
    for l in range(L):
        p = f"model.layers.{l}."
        shapes[p + "attn_norm.weight"] = (D,)
        for n in "qfi":
            shapes[p + f"attn.{n}_proj.weight"] = (D, D)
            if s["use_short_conv"]:
                shapes[p + f"attn.{n}_conv1d.weight"] = (D, 1, K)
        shapes[p + "attn.g_norm.weight"] = (D,)
        shapes[p + "attn.o_proj.weight"] = (D, D)
        shapes[p + "mlp_norm.weight"] = (D,)
        shapes[p + "mlp.gate_proj.weight"] = (I, D)
        shapes[p + "mlp.up_proj.weight"] = (I, D)
        shapes[p + "mlp.down_proj.weight"] = (D, I)
    shapes["model.norm.weight"] = (D,)
    if not s["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def make_weights(s):
    """Random float32 weights at a larger scale than a trained model's (as the shared fixtures):
    projections N(0, 1.5/sqrt(fan_in)), norms 1 + 0.2 N, lower bounds N(0, 1), conv N(0, 1.5/sqrt(K)),
    embeddings N(0, 1) when untied, N(0, 3/sqrt(D)) when tied (the output projection then gives
    logits of std ~3 instead of ~sqrt(D)), lm_head N(0, 3/sqrt(D))."""
    rng = np.random.default_rng([s["seed"], 0])
    D = s["hidden_size"]
    W = {}
    for name, shape in weight_shapes(s).items():  # fixed order -> deterministic
        z = rng.standard_normal(shape, dtype=np.float32)
        if name == "model.embeddings.weight":
            std = 3.0 / math.sqrt(D) if s["tie_word_embeddings"] else 1.0
            w = z * std
        elif name == "lm_head.weight":
            w = z * (3.0 / math.sqrt(D))
        elif name == "model.lower_bounds":
            w = z
        elif name.endswith("norm.weight"):
            w = 1.0 + 0.2 * z
        elif "conv1d" in name:
            w = z * (1.5 / math.sqrt(shape[-1]))
        else:  # [out, in] projections
            w = z * (1.5 / math.sqrt(shape[1]))
        W[name] = np.ascontiguousarray(w.astype(np.float32))
    return W


def f32_to_bf16_bits(x):
    """Round float32 -> bfloat16 (round to nearest even, as torch does), as uint16 bits."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def bf16_bits_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def as_stored(W, dtype):
    """-> (raw arrays to write, float32 arrays holding exactly the stored values)."""
    raw, up = {}, {}
    for k, w in W.items():
        if dtype == "F32":
            raw[k] = ("F32", w)
            up[k] = w
        elif dtype == "F16":
            h = w.astype(np.float16)
            raw[k] = ("F16", h)
            up[k] = h.astype(np.float32)
        elif dtype == "BF16":
            u = f32_to_bf16_bits(w)
            raw[k] = ("BF16", u)
            up[k] = bf16_bits_to_f32(u)
        else:
            raise ValueError(dtype)
    return raw, up


_NP_DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32, "F64": np.float64,
          "I64": np.int64}


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, np.ndarray)}. Writes the safetensors format (sorted names,
    8-byte aligned header padded with spaces) without needing torch (numpy has no bfloat16)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, a = tensors[name]
        a = np.ascontiguousarray(a, dtype=_NP_DT[dt])
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def read_safetensors(path):
    """-> {name: (dtype_str, np.ndarray)}; BF16 comes back as uint16 bits."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=_NP_DT[info["dtype"]]).reshape(info["shape"])
        out[name] = (info["dtype"], arr)
    return out


def load_checkpoint_f64(folder):
    """Read a checkpoint folder (single file or sharded) -> {name: float64 array}."""
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    W = {}
    for fn in files:
        for k, (dt, a) in read_safetensors(os.path.join(folder, fn)).items():
            W[k] = (bf16_bits_to_f32(a) if dt == "BF16" else a).astype(np.float64)
    return W


def write_checkpoint(folder, raw, shards):
    """raw: {name: (dtype, array)}. Writes model.safetensors or shards + index (HF layout)."""
    meta = {"format": "pt"}
    if shards <= 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), raw, meta)
        return ["model.safetensors"]
    names = sorted(raw)
    sizes = [np.asarray(raw[k][1]).nbytes for k in names]
    total = sum(sizes)
    groups, cur, acc = [[] for _ in range(shards)], 0, 0
    for k, sz in zip(names, sizes):  # greedy split by bytes, keeping name order
        if acc >= total * (cur + 1) / shards and cur < shards - 1:
            cur += 1
        groups[cur].append(k)
        acc += sz
    groups = [g for g in groups if g]
    n = len(groups)
    weight_map, files = {}, []
    for i, g in enumerate(groups):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        write_safetensors(os.path.join(folder, fn), {k: raw[k] for k in g}, meta)
        for k in g:
            weight_map[k] = fn
        files.append(fn)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    return files


# ----------------------------------------------------------------------------------------------
# Independent float64 token-by-token implementation of shared/HGRN2.md
# ----------------------------------------------------------------------------------------------

def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Ref64:
    """HGRN2 in float64, one token at a time, batched over rows. cfg: a config.json dict."""

    def __init__(self, cfg, W):
        self.W = {k: np.asarray(v, dtype=np.float64) for k, v in W.items()}
        D = cfg["hidden_size"]
        er, nh = cfg.get("expand_ratio"), cfg.get("num_heads")
        if er is not None:
            dk = er
            H = D // dk
        else:
            H = nh
            dk = D // H
        self.D, self.H, self.dk, self.dv = D, H, dk, D // H
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg.get("norm_eps", 1e-6)
        self.conv = bool(cfg.get("use_short_conv"))
        self.K = cfg.get("conv_size", 4)
        self.tied = bool(cfg.get("tie_word_embeddings"))
        if cfg.get("hidden_act", "swish") != "swish":
            raise ValueError("hidden_act must be swish")
        self.lb = None
        if cfg.get("use_lower_bound"):
            lbw = self.W["model.lower_bounds"]
            e = np.exp(lbw - lbw.max(axis=0, keepdims=True))
            sm = e / e.sum(axis=0, keepdims=True)           # softmax over the layer axis
            self.lb = np.cumsum(sm, axis=0) - sm[0]          # lb[0] = 0
        self.E = self.W["model.embeddings.weight"]
        self.Wlm = self.E if self.tied else self.W["lm_head.weight"]

    def rms(self, z, w):
        return z / np.sqrt(np.mean(z * z, axis=-1, keepdims=True) + self.eps) * w

    def init_state(self, B):
        st = {"S": [np.zeros((B, self.H, self.dv, self.dk)) for _ in range(self.L)]}
        if self.conv:
            st["conv"] = [{n: np.zeros((B, self.D, self.K)) for n in "qfi"} for _ in range(self.L)]
        return st

    def step(self, st, tok):
        W, B = self.W, len(tok)
        x = self.E[np.asarray(tok)]
        for l in range(self.L):
            p = f"model.layers.{l}."
            a = self.rms(x, W[p + "attn_norm.weight"])
            proj = {n: a @ W[p + f"attn.{n}_proj.weight"].T for n in "qfi"}
            if self.conv:
                for n in "qfi":
                    buf = st["conv"][l][n]                       # [B, D, K], oldest first
                    buf[:, :, :-1] = buf[:, :, 1:].copy()
                    buf[:, :, -1] = proj[n]
                    w = W[p + f"attn.{n}_conv1d.weight"][:, 0, :]  # [D, K]
                    proj[n] = np.einsum("bdk,dk->bd", buf, w)
            q, f, v = proj["q"], proj["f"], proj["i"]
            q = q * _sigmoid(q)
            if self.lb is not None and l > 0:
                lb = self.lb[l]
                g = lb + (1.0 - lb) * _sigmoid(f)
                k = (1.0 - lb) * _sigmoid(-f)                    # = 1 - g, without cancellation
            else:
                g = _sigmoid(f)
                k = _sigmoid(-f)
            H, dk, dv = self.H, self.dk, self.dv
            q, g, k, v = q.reshape(B, H, dk), g.reshape(B, H, dk), k.reshape(B, H, dk), v.reshape(B, H, dv)
            S = st["S"][l] * g[:, :, None, :] + v[:, :, :, None] * k[:, :, None, :]
            st["S"][l] = S
            o = np.einsum("bhvk,bhk->bhv", S, q).reshape(B, self.D)
            x = x + self.rms(o, W[p + "attn.g_norm.weight"]) @ W[p + "attn.o_proj.weight"].T
            m = self.rms(x, W[p + "mlp_norm.weight"])
            gt = m @ W[p + "mlp.gate_proj.weight"].T
            up = m @ W[p + "mlp.up_proj.weight"].T
            x = x + (gt * _sigmoid(gt) * up) @ W[p + "mlp.down_proj.weight"].T
        return self.rms(x, W["model.norm.weight"]) @ self.Wlm.T

    def forward(self, ids, st=None):
        ids = np.asarray(ids)
        B, T = ids.shape
        st = st if st is not None else self.init_state(B)
        return np.stack([self.step(st, ids[:, t]) for t in range(T)], axis=1)


def ref_prefill_and_greedy(r, ids, n_steps, banned):
    """Prompt logits, state after the prompt, and the greedy continuation (banned ids excluded)."""
    ids = np.asarray(ids)
    B = ids.shape[0]
    st = r.init_state(B)
    logits = r.forward(ids, st)
    out = {"logits": logits, "state": [s.copy() for s in st["S"]]}
    if r.conv:
        out["conv"] = [{n: c[n].copy() for n in "qfi"} for c in st["conv"]]
    cur = logits[:, -1].copy()
    greedy, margins, step_logits = [], [], []
    rows = np.arange(B)
    for s in range(n_steps):
        step_logits.append(cur.copy())
        lg = cur.copy()
        if banned:
            lg[:, banned] = -np.inf
        top = np.argsort(-lg, axis=-1, kind="stable")[:, :2]
        nxt = top[:, 0]
        margins.append(lg[rows, top[:, 0]] - lg[rows, top[:, 1]])  # log-prob gap == logit gap
        greedy.append(nxt)
        if s + 1 < n_steps:
            cur = r.step(st, nxt)
    out["greedy"] = np.stack(greedy, axis=1).astype(np.int32)
    out["margins"] = np.stack(margins, axis=1)       # [B, n_steps]
    out["step_logits"] = np.stack(step_logits, axis=1)  # logits that chose greedy[:, s]
    return out


def draw_ids(rng, shape, V, avoid):
    allowed = np.setdiff1d(np.arange(3, V), np.asarray(sorted(avoid), dtype=np.int64))
    return allowed[rng.integers(0, len(allowed), size=shape)].astype(np.int32)


def choose_short_prompts(r, s, d, min_margin, max_tries):
    """Draw the short prompts; redraw a row until its greedy min margin >= min_margin."""
    rng = np.random.default_rng([s["seed"], 1])
    avoid = set(d["eos_ids"]) | {x for x in (s["bos_token_id"], s["pad_token_id"]) if x is not None}
    B, T = s["short_batch"], s["short_len"]
    best_ids = np.zeros((B, T), dtype=np.int32)
    best_m = np.full(B, -np.inf)
    tries = np.zeros(B, dtype=int)
    for t in range(max_tries):
        cand = draw_ids(rng, (B, T), d["V"], avoid)
        todo = best_m < min_margin
        if not todo.any():
            break
        o = ref_prefill_and_greedy(r, cand[todo], s["greedy_steps"], d["eos_ids"])
        mm = o["margins"].min(axis=1)
        for j, b in enumerate(np.nonzero(todo)[0]):
            tries[b] += 1
            if mm[j] > best_m[b]:
                best_m[b], best_ids[b] = mm[j], cand[b]
    long_ids = draw_ids(np.random.default_rng([s["seed"], 2]), (1, s["long_len"]), d["V"], avoid)
    return best_ids, long_ids, tries.tolist()


# ----------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------

def config_kwargs(s):
    return dict(
        vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], num_hidden_layers=s["num_hidden_layers"],
        attn_mode="chunk", num_heads=s["num_heads"], expand_ratio=s["expand_ratio"],
        use_short_conv=s["use_short_conv"], conv_size=s["conv_size"], use_lower_bound=s["use_lower_bound"],
        hidden_ratio=s["hidden_ratio"], intermediate_size=s["intermediate_size"], hidden_act="swish",
        max_position_embeddings=2048, elementwise_affine=True, norm_eps=s["norm_eps"], attn=None,
        use_cache=True, pad_token_id=s["pad_token_id"], bos_token_id=s["bos_token_id"],
        eos_token_id=s["eos_token_id"], tie_word_embeddings=s["tie_word_embeddings"], initializer_range=0.02,
        fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False, fuse_linear_cross_entropy=False,
        use_l2warp=False, attnres_block_size=None,
    )


def fallback_config_dict(s):
    """What HGRN2Config.save_pretrained writes (keys as in shared/fixtures), for runs without fla."""
    c = config_kwargs(s)
    d = derived(s)
    c["num_heads"], c["expand_ratio"] = d["H"], d["dk"]
    c["model_type"] = "hgrn2"
    c["transformers_version"] = "none (written without transformers)"
    return c


def finish_config(c, s):
    """Keep a field the spec left null as null (HGRN2Config fills both), and add dtype."""
    if s["num_heads"] is None:
        c["num_heads"] = None
    if s["expand_ratio"] is None:
        c["expand_ratio"] = None
    if s["dtype"] != "F32":
        c["dtype"] = {"BF16": "bfloat16", "F16": "float16"}[s["dtype"]]
    return c


def write_config(folder, s, use_fla):
    if use_fla:
        from fla.models import HGRN2Config
        cfg = HGRN2Config(**config_kwargs(s))
        cfg.save_pretrained(folder)
        c = json.load(open(os.path.join(folder, "config.json")))
        fb = fallback_config_dict(s)
        diff = sorted(k for k in set(c) | set(fb) if k != "transformers_version" and c.get(k, "<absent>") != fb.get(k, "<absent>"))
        if diff:
            print(f"    note: HGRN2Config wrote fields that differ from the fallback: "
                  + ", ".join(f"{k}={c.get(k, '<absent>')!r}" for k in diff))
    else:
        c = fallback_config_dict(s)
    c = finish_config(c, s)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(json.dumps(c, indent=2, sort_keys=True) + "\n")
    return c


# ----------------------------------------------------------------------------------------------
# fla side (GPU)
# ----------------------------------------------------------------------------------------------

def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run_fla(folder, s, d, Wup, short_ids, long_ids, ref):
    """fla HGRN2ForCausalLM in float32 on the GPU with the as-stored weights."""
    import torch
    from fla.models import HGRN2Config, HGRN2ForCausalLM

    try:  # plain float32 products outside fla's kernels (the defaults, made explicit)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
    except Exception as e:  # noqa: BLE001
        print(f"    note: could not set float32 matmul precision: {e}")
    dev = torch.device("cuda")
    res, checks = {}, {}

    config = HGRN2Config(**config_kwargs(s))
    torch.manual_seed(0)
    model = HGRN2ForCausalLM(config).to(torch.float32)
    sd = model.state_dict()
    missing = sorted(set(Wup) - set(sd))
    if missing:
        raise RuntimeError(f"weights the fla model does not have: {missing}")
    extra = sorted(k for k in set(sd) - set(Wup) if not (k == "lm_head.weight" and s["tie_word_embeddings"]))
    if extra:
        raise RuntimeError(f"fla model parameters without a weight: {extra}")
    with torch.no_grad():
        for k, t in sd.items():
            if k in Wup:
                if tuple(t.shape) != tuple(Wup[k].shape):
                    raise RuntimeError(f"{k}: fla shape {tuple(t.shape)} vs ours {Wup[k].shape}")
                t.copy_(torch.from_numpy(Wup[k]))
        if s["tie_word_embeddings"]:
            if model.lm_head.weight.data_ptr() != model.model.embeddings.weight.data_ptr():
                print("    warning: fla did not tie lm_head to the embeddings; copying them")
                model.lm_head.weight.copy_(model.model.embeddings.weight)
            checks["tied_shared_storage"] = bool(model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr())
    model = model.to(dev).eval()
    attn0 = model.model.layers[0].attn
    checks["fla_H_dk"] = [int(attn0.num_heads), int(attn0.expand_ratio)]
    assert checks["fla_H_dk"] == [d["H"], d["dk"]], checks["fla_H_dk"]

    with torch.no_grad():
        # short prompts: T = 48 <= 64 -> fla's layer uses fused_recurrent
        out = model(input_ids=torch.from_numpy(short_ids.astype(np.int64)).to(dev), use_cache=True)
        res["short_logits"] = out.logits.float().cpu().numpy()
        pkv = out.past_key_values
        for l in range(d["L"]):
            st = pkv[l]
            res[f"short_state_{l}"] = st["recurrent_state"].float().cpu().numpy().copy()
            if s["use_short_conv"]:
                for n, c in zip("qfi", st["conv_state"]):
                    res[f"short_conv_{n}_{l}"] = c.float().cpu().numpy().copy()
        # decode along the float64 greedy path, one token at a time (fla's own decode step)
        greedy, step_logits = ref["greedy"], ref["step_logits"]
        dec = [res["short_logits"][:, -1]]
        for t in range(greedy.shape[1] - 1):
            o2 = model(input_ids=torch.from_numpy(greedy[:, t:t + 1].astype(np.int64)).to(dev),
                       past_key_values=pkv, use_cache=True)
            pkv = o2.past_key_values
            dec.append(o2.logits[:, -1].float().cpu().numpy())
        dec = np.stack(dec, axis=1)
        checks["rel_decode_vs_float64"] = rel(dec, step_logits)
        dl = dec.copy()
        if d["eos_ids"]:
            dl[:, :, d["eos_ids"]] = -np.inf
        checks["decode_argmax_equals_greedy"] = bool((dl.argmax(-1) == greedy).all())
        # long prompt: T = 200 > 64 -> chunked kernel (chunk_gla)
        out = model(input_ids=torch.from_numpy(long_ids.astype(np.int64)).to(dev), use_cache=False)
        res["long_logits"] = out.logits.float().cpu().numpy()

    # the written folder must load in fla/transformers and give the same logits
    try:
        m2 = HGRN2ForCausalLM.from_pretrained(folder, dtype=torch.float32).to(dev).eval()
        with torch.no_grad():
            lg = m2(input_ids=torch.from_numpy(short_ids.astype(np.int64)).to(dev)).logits.float().cpu().numpy()
        checks["reload_max_abs_diff"] = float(np.abs(lg - res["short_logits"]).max())
        checks["reload_H_dk"] = [int(m2.config.num_heads), int(m2.config.expand_ratio)]
        del m2
    except Exception as e:  # noqa: BLE001
        checks["reload_error"] = f"{type(e).__name__}: {e}"
        print("    reload failed:\n" + traceback.format_exc())
    del model
    torch.cuda.empty_cache()
    return res, checks


def versions():
    v = {}
    for mod in ("fla", "torch", "triton", "transformers", "numpy"):
        try:
            m = __import__(mod)
            v[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"unavailable ({type(e).__name__})"
    try:
        import torch
        if torch.cuda.is_available():
            v["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    wd = os.environ.get("FLA_WHEELS_DIR")
    if wd and os.path.isdir(wd):
        v["fla_wheels"] = {fn: hashlib.sha256(open(os.path.join(wd, fn), "rb").read()).hexdigest()[:16]
                           for fn in sorted(os.listdir(wd)) if fn.endswith(".whl")}
    return v


# ----------------------------------------------------------------------------------------------
# One fixture
# ----------------------------------------------------------------------------------------------

def make_one(outdir, s, use_fla, min_margin, max_tries, vers):
    t0 = time.time()
    d = derived(s)
    folder = os.path.join(outdir, s["name"])
    os.makedirs(folder, exist_ok=True)
    for fn in os.listdir(folder):
        os.remove(os.path.join(folder, fn))

    W = make_weights(s)
    raw, Wup = as_stored(W, s["dtype"])
    cfg = write_config(folder, s, use_fla)
    files = write_checkpoint(folder, raw, s["shards"])
    # the reference reads the weights back from the files just written
    W64 = load_checkpoint_f64(folder)
    assert set(W64) == set(Wup) and all(np.array_equal(W64[k], Wup[k]) for k in Wup)
    r = Ref64(cfg, W64)

    short_ids, long_ids, tries = choose_short_prompts(r, s, d, min_margin, max_tries)
    ref = ref_prefill_and_greedy(r, short_ids, s["greedy_steps"], d["eos_ids"])
    ref_long = r.forward(long_ids)

    g = {
        "short_ids": ("I32", short_ids), "long_ids": ("I32", long_ids),
        "ref64_short_logits": ("F32", ref["logits"]), "ref64_long_logits": ("F32", ref_long),
        "greedy_ids": ("I32", ref["greedy"]),
    }
    info = {
        "name": s["name"], "seed": s["seed"],
        "fla_version": vers.get("fla"), "fla_commit": None,
        "rel_fla_vs_float64": None,
    }
    checks = {}
    if use_fla:
        fres, checks = run_fla(folder, s, d, Wup, short_ids, long_ids, ref)
        for k, v in fres.items():
            g[k] = ("F32", v)
        info["rel_fla_vs_float64"] = {"short": rel(fres["short_logits"], ref["logits"]),
                                      "long": rel(fres["long_logits"], ref_long)}
        checks["rel_state_fla_vs_float64"] = max(rel(fres[f"short_state_{l}"], ref["state"][l]) for l in range(d["L"]))
        if s["use_short_conv"]:
            checks["rel_conv_fla_vs_float64"] = max(rel(fres[f"short_conv_{n}_{l}"], ref["conv"][l][n])
                                                    for l in range(d["L"]) for n in "qfi")
    write_safetensors(os.path.join(folder, "golden.safetensors"), g)

    info.update({
        "notes": ("short_logits, long_logits, short_state_*, short_conv_*: fla HGRN2ForCausalLM forward in float32 "
                  "on the GPU (short: T<=64, fused_recurrent kernel; long: chunked kernel). ref64_*: independent "
                  "float64 token-by-token implementation (tools/golden/make_fixtures.py, Ref64). greedy_ids: argmax "
                  "continuation computed in float64 by that implementation, every EOS id banned; fla's generate() "
                  "was not used. Both use the checkpoint's weights as stored (" + s["dtype"] + ", upcast)."
                  if use_fla else "CPU-only dry run (--no-fla): no fla outputs in golden.safetensors."),
        "greedy_min_logprob_margin": [float(x) for x in ref["margins"].min(axis=1)],
        "greedy_logprob_margins": [[round(float(x), 6) for x in row] for row in ref["margins"]],
        "greedy_banned_ids": d["eos_ids"],
        "short_prompt_tries": tries,
        "min_margin_target": min_margin,
        "checks": checks,
        "checkpoint": {"dtype": s["dtype"], "files": files},
        "derived": {k: d[k] for k in ("V", "D", "L", "H", "dk", "dv", "I", "K")},
        "spec": s,
        "versions": vers,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": "tools/golden/make_fixtures.py",
    })
    with open(os.path.join(folder, "golden.json"), "w") as f:
        json.dump(info, f, indent=1)
    size = sum(os.path.getsize(os.path.join(folder, fn)) for fn in os.listdir(folder))
    info["_folder_bytes"] = size
    info["_seconds"] = time.time() - t0
    return info


def summary_line(info):
    r = info.get("rel_fla_vs_float64") or {}
    c = info.get("checks", {})
    fmt = lambda x: "-" if x is None else f"{x:.2e}"
    m = info["greedy_min_logprob_margin"]
    return (f"{info['name']:<15} {info['spec']['dtype']:<5} {fmt(r.get('short')):>9} {fmt(r.get('long')):>9} "
            f"{fmt(c.get('rel_decode_vs_float64')):>9} {fmt(c.get('rel_state_fla_vs_float64')):>9} "
            f"{fmt(c.get('rel_conv_fla_vs_float64')):>9} {fmt(c.get('reload_max_abs_diff')):>9} "
            f"{str(c.get('decode_argmax_equals_greedy', '-')):>6}  "
            + " ".join(f"{x:.4f}" for x in m) + f"  {info['_folder_bytes'] / 1e6:.2f}MB")


SUMMARY_HEAD = (f"{'preset':<15} {'dtype':<5} {'short':>9} {'long':>9} {'decode':>9} {'state':>9} {'conv':>9} "
                f"{'reload':>9} {'dec=gr':>6}  min margins (rows)  size")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output folder (one subfolder per model)")
    ap.add_argument("--preset", nargs="*", default=[], help="preset names, or 'all'")
    ap.add_argument("--spec", action="append", default=[],
                    help="a model spec as JSON (or @file.json); fields as in DEFAULT_SPEC; may repeat")
    ap.add_argument("--no-fla", action="store_true", help="CPU-only dry run: no fla outputs")
    ap.add_argument("--min-margin", type=float, default=0.05,
                    help="redraw a short prompt until its float64 greedy min margin is at least this")
    ap.add_argument("--max-tries", type=int, default=32)
    ap.add_argument("--list", action="store_true", help="list the presets and exit")
    ap.add_argument("--no-summary", action="store_true", help="write no SUMMARY.txt (parallel runs; see --summarize)")
    ap.add_argument("--summarize", action="store_true",
                    help="only (re)write DIR/SUMMARY.txt from the golden.json files under --out; with "
                         "--preset, a preset without a golden.json is reported as FAILED")
    a = ap.parse_args(argv)

    if a.list:
        for k, v in PRESETS.items():
            print(k, json.dumps(v))
        return 0
    if a.summarize:
        return summarize(a.out, list(PRESETS) if "all" in a.preset else a.preset)
    if not a.out:
        ap.error("--out is required")
    specs = []
    names = list(PRESETS) if "all" in a.preset else a.preset
    for n in names:
        if n not in PRESETS:
            ap.error(f"unknown preset {n}; known: {', '.join(PRESETS)}")
        specs.append(full_spec(n, PRESETS[n]))
    for js in a.spec:
        o = json.load(open(js[1:])) if js.startswith("@") else json.loads(js)
        specs.append(full_spec(o.pop("name", None), o))
    if not specs:
        ap.error("nothing to do: give --preset and/or --spec")

    use_fla = not a.no_fla
    vers = versions()
    print("versions:", json.dumps(vers), flush=True)
    if use_fla:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA device; use --no-fla for a CPU-only dry run", file=sys.stderr)
            return 2
    os.makedirs(a.out, exist_ok=True)
    infos, failed = [], []
    for s in specs:
        print(f"== {s['name']}: {json.dumps({k: v for k, v in s.items() if v != DEFAULT_SPEC.get(k)})}", flush=True)
        try:
            info = make_one(a.out, s, use_fla, a.min_margin, a.max_tries, vers)
            infos.append(info)
            print(f"   done in {info['_seconds']:.1f}s: rel_fla_vs_float64={info['rel_fla_vs_float64']} "
                  f"checks={json.dumps(info['checks'])} margins={info['greedy_min_logprob_margin']} "
                  f"tries={info['short_prompt_tries']}", flush=True)
        except Exception:  # noqa: BLE001
            failed.append(s["name"])
            print(f"   FAILED {s['name']}:\n{traceback.format_exc()}", flush=True)
    if not a.no_summary:
        text = summary_text(infos, failed, vers)
        with open(os.path.join(a.out, "SUMMARY.txt"), "w") as f:
            f.write(text + "\n")
        print("\n" + text, flush=True)
    return 1 if failed else 0


def summary_text(infos, failed, vers):
    lines = [f"fla {vers.get('fla')}, torch {vers.get('torch')}, triton {vers.get('triton')}, "
             f"transformers {vers.get('transformers')}, gpu {vers.get('gpu', '-')}",
             "relative L2 errors vs float64 (short: fused_recurrent, long: chunked, decode: fla token-by-token "
             "along the greedy path, state/conv: after the short prompts); reload: max |logit diff| of the folder "
             "reloaded with from_pretrained; dec=gr: fla decode argmax == float64 greedy",
             SUMMARY_HEAD] + [summary_line(i) for i in infos]
    if failed:
        lines.append("FAILED: " + ", ".join(failed))
    return "\n".join(lines)


def summarize(outdir, expected):
    """Merge the golden.json files of (parallel) runs into one SUMMARY.txt."""
    names = sorted(n for n in os.listdir(outdir) if os.path.isfile(os.path.join(outdir, n, "golden.json")))
    order = [n for n in expected if n in names] + [n for n in names if n not in expected]
    infos, vers = [], {}
    for n in order:
        folder = os.path.join(outdir, n)
        info = json.load(open(os.path.join(folder, "golden.json")))
        info["_folder_bytes"] = sum(os.path.getsize(os.path.join(folder, fn)) for fn in os.listdir(folder))
        infos.append(info)
        vers = info.get("versions", vers)
    failed = [n for n in expected if n not in names]
    text = summary_text(infos, failed, vers)
    with open(os.path.join(outdir, "SUMMARY.txt"), "w") as f:
        f.write(text + "\n")
    print(text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
