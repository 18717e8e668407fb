"""Export the bundled models for the lab page: ONNX graphs, tokenizers, metadata, reference values.

    .venv/bin/python lab/export.py OUT_DIR

writes, for every bundled model NAME,

    OUT_DIR/site/lab/models/NAME/model.onnx      the forward pass with the lab's intermediates as outputs
    OUT_DIR/site/lab/models/NAME/tokenizer.json  the model's own tokenizer file, unchanged
    OUT_DIR/site/lab/models/NAME/meta.json       shapes, labels, BOS id, mean activations for mean-ablation
    OUT_DIR/reference/NAME.json                  Python's values for the canonical prompts (the browser test
                                                 compares the page with them; they are not part of the site)
    OUT_DIR/reference/tokenizer.json             corpus sentences and edge cases with Python's token ids

The graph is written node by node with ``onnx.helper`` from the weights of the
``TransformerBridge`` that ``helpers.load_model`` returns (compatibility mode:
LayerNorm weights folded into the next linear map, unembedding centred), so the
logits equal the bridge's logits, not just up to a constant. One sequence, any
length up to the context. Inputs:

    tokens     int64 [T]              token ids, BOS first
    head_keep  float [L, H]           1 keeps a head, 0 replaces its z by head_fill
    head_fill  float [L, H, d_head]   zeros (zero-ablation) or the mean z (mean-ablation)
    mlp_keep   float [L]              (models with MLPs) the same for every MLP's output
    mlp_fill   float [L, d_model]

Outputs (names follow TransformerLens's hooks where there is one):

    logits         [T, V]            the model's logits
    resid          [L + 1, T, d]     h0 = embed + pos_embed, then blocks.l.hook_resid_post
    lens_logits    [L + 1, T, V]     logit lens LN_f(h) W_U + b_U at every depth (chapter 2)
    pattern        [L, H, T, T]      blocks.l.attn.hook_pattern
    z              [L, T, H, d_head] blocks.l.attn.hook_z (after any ablation)
    mlp_out        [L, T, d]         blocks.l.hook_mlp_out (after any ablation; models with MLPs)
    final_scale    [T]               ln_final.hook_scale
    writer_logits  [P, V]            direct logit attribution at the last position: row p is
                                     (c_p - mean(c_p)) / s · W_U for the p-th write c_p of the final stream
                                     (embed, pos_embed, then per block its heads, attention bias
                                     and MLP), and a last row b_U. Row a minus row b of a column pair
                                     gives chapter 2's DLA of a against b; the rows sum to the logits.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPSET = 17
IR_VERSION = 8          # onnxruntime-web 1.30 reads IR 8 and later; 8 is the oldest with opset 17
EPS = 1e-5
MODELS = ("rs-gpt2-4l", "rs-attn-2l")

#: The prompts the chapters use, each with the answer and the rival that chapter 2's DLA compares.
CANONICAL = [
    ("The Eiffel Tower is located in", " Paris", " London"),
    ("The capital of France is", " Paris", " London"),
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("Harry Potter opened the door. Everyone looked up at Harry", " Potter", " Mary"),
]
#: Mean-ablation averages over this many corpus windows of this many tokens (helpers.lens.corpus_tokens).
MEAN_SEQS, MEAN_LEN = 48, 64
#: Length of R in the page's repeated random sequence BOS + R + R.
REPEAT_LENGTH = 20


# ----------------------------------------------------------------------------- weights
def bridge_weights(model, name: str) -> dict:
    """The compatibility-mode weights as float32 numpy arrays, keyed like TransformerLens."""
    import torch

    names = ["W_E", "W_pos", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O", "W_U", "b_U"]
    if not model.cfg.attn_only:
        names += ["W_in", "b_in", "W_out", "b_out"]
    with torch.no_grad():
        w = {n: getattr(model, n).detach().float().cpu().numpy().copy() for n in names}
    tied = tied_unembedding(model, name)
    if tied is not None:
        w.update(tied)
    return w


def tied_unembedding(model, name: str):
    """For tied embeddings, what rebuilds the compatibility-mode W_U from W_E: W_U is the raw W_Eᵀ
    scaled by ln_final's weight, then centred over d_model and over the vocabulary (TransformerLens's
    fold_ln, center_unembed), and the raw W_E is the centred W_E plus each row's mean. Returns
    {"W_E_row_mean", "ln_final_w"}, or None when the rebuilt matrix is not W_U (untied weights)."""
    import torch

    from helpers.models import load_model

    raw = load_model(name, device="cpu", compatibility=False)
    with torch.no_grad():
        row_mean = raw.W_E.detach().float().mean(-1)
        wf = raw.state_dict().get("ln_final.weight")
        if wf is None:
            return None
        wf = wf.float()
        rebuilt = wf[:, None] * (model.W_E.detach().float() + row_mean[:, None]).T
        rebuilt = rebuilt - rebuilt.mean(0, keepdim=True)
        rebuilt = rebuilt - rebuilt.mean(1, keepdim=True)
        if float((rebuilt - model.W_U.detach().float()).abs().max()) > 1e-6:
            return None
    return {"W_E_row_mean": row_mean.numpy().copy(), "ln_final_w": wf.numpy().copy()}


def writer_labels(n_layers: int, n_heads: int, has_mlp: bool) -> list[str]:
    """Chapter 2's labels for the parts of the final stream, in model order, then the unembedding bias."""
    labels = ["embed", "pos_embed"]
    for layer in range(n_layers):
        labels += [f"L{layer + 1}H{h}" for h in range(n_heads)] + [f"L{layer + 1} attn bias"]
        if has_mlp:
            labels.append(f"L{layer + 1} MLP")
    return labels + ["unembed bias"]


# ----------------------------------------------------------------------------- graph
class _Graph:
    """A small builder: every call adds one node and returns its output name."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, array) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # 0-d stays 0-d
        return name

    def op(self, kind: str, inputs: list, name: str | None = None, **attrs) -> str:
        from onnx import helper

        self.count += 1
        out = name or f"{kind.lower()}_{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], name=f"n{self.count}_{kind}", **attrs))
        return out


def _layer_norm(g: _Graph, x: str, eps: str):
    """Centre and rescale along the last axis (the folded LayerNorm). Returns (normalised, scale)."""
    mean = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
    xc = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Mul", [xc, xc])], axes=[-1], keepdims=1)
    scale = g.op("Sqrt", [g.op("Add", [var, eps])])
    return g.op("Div", [xc, scale]), scale


def build_graph(w: dict, n_ctx: int, name: str):
    """The ONNX model of one bundled transformer (see the module docstring for inputs and outputs)."""
    from onnx import TensorProto, helper

    L, H, d, dh = w["W_Q"].shape[0], w["W_Q"].shape[1], w["W_Q"].shape[2], w["W_Q"].shape[3]
    V = w["W_U"].shape[1]
    has_mlp = "W_in" in w
    g = _Graph()
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731

    W_E, W_pos, b_U = g.const("W_E", f32(w["W_E"])), g.const("W_pos", f32(w["W_pos"])), g.const("b_U", f32(w["b_U"]))
    if "ln_final_w" in w:  # tied embeddings: rebuild W_U from W_E in the graph (1 MB less to download)
        raw_T = g.op("Transpose", [g.op("Add", [W_E, g.const("W_E_row_mean", f32(w["W_E_row_mean"][:, None]))])],
                     perm=[1, 0])                                                  # [d, V]
        scaled = g.op("Mul", [raw_T, g.const("ln_final_w", f32(w["ln_final_w"][:, None]))])
        scaled = g.op("Sub", [scaled, g.op("ReduceMean", [scaled], axes=[0], keepdims=1)])
        W_U = g.op("Sub", [scaled, g.op("ReduceMean", [scaled], axes=[1], keepdims=1)], name="W_U")
    else:
        W_U = g.const("W_U", f32(w["W_U"]))
    eps = g.const("eps", f32(EPS))
    mask_full = np.triu(np.full((n_ctx, n_ctx), -1e9, dtype=np.float32), k=1)  # 0 on and below the diagonal
    mask_full_name = g.const("causal_mask", mask_full)
    zero1, one1, minus1 = g.const("i_zero", i64([0])), g.const("i_one", i64([1])), g.const("i_minus1", i64([-1]))
    one_f = g.const("f_one", f32(1.0))

    # T and the position-dependent constants sliced to it
    T = g.op("Shape", ["tokens"])                                                 # [1]
    pos = g.op("Slice", [W_pos, zero1, T, zero1])                                 # [T, d]
    TT = g.op("Concat", [T, T], axis=0)
    mask = g.op("Slice", [mask_full_name, g.const("i_zero2", i64([0, 0])), TT, g.const("i_axes01", i64([0, 1]))])
    last = g.op("Sub", [T, one1])                                                 # [1]: index of the last position

    embed = g.op("Gather", [W_E, "tokens"], axis=0)                               # [T, d]
    resid = g.op("Add", [embed, pos])
    states = [resid]
    writes_last = [g.op("Gather", [embed, last], axis=0), g.op("Gather", [pos, last], axis=0)]  # each [1, d]
    patterns, zs, mlps = [], [], []
    inv_sqrt = g.const("attn_scale", f32(1.0 / math.sqrt(dh)))
    for l in range(L):
        x, _ = _layer_norm(g, resid, eps)
        heads = {}
        for kind in ("Q", "K", "V"):
            Wm = w[f"W_{kind}"][l].transpose(1, 0, 2).reshape(d, H * dh)           # [d, H*dh], head-major columns
            bm = w[f"b_{kind}"][l].reshape(H * dh)
            y = g.op("Add", [g.op("MatMul", [x, g.const(f"W_{kind}_{l}", f32(Wm))]), g.const(f"b_{kind}_{l}", f32(bm))])
            y = g.op("Reshape", [y, g.const(f"shape_thd_{kind}_{l}", i64([-1, H, dh]))])   # [T, H, dh]
            heads[kind] = g.op("Transpose", [y], perm=[1, 0, 2])                          # [H, T, dh]
        kT = g.op("Transpose", [heads["K"]], perm=[0, 2, 1])                              # [H, dh, T]
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [heads["Q"], kT]), inv_sqrt]), mask])
        pattern = g.op("Softmax", [scores], axis=-1)                                     # [H, Tq, Tk]
        patterns.append(g.op("Unsqueeze", [pattern, zero1]))
        z = g.op("Transpose", [g.op("MatMul", [pattern, heads["V"]])], perm=[1, 0, 2])   # [T, H, dh]
        # ablation: z' = keep * z + (1 - keep) * fill, per head, at every position
        keep = g.op("Unsqueeze", [g.op("Gather", ["head_keep", g.const(f"i_l{l}", i64(l))], axis=0),
                                  minus1])                                               # [H, 1]
        fill = g.op("Gather", ["head_fill", f"i_l{l}"], axis=0)                          # [H, dh]
        z = g.op("Add", [g.op("Mul", [z, keep]), g.op("Mul", [fill, g.op("Sub", [one_f, keep])])])
        zs.append(g.op("Unsqueeze", [z, zero1]))
        W_O = g.const(f"W_O_{l}", f32(w["W_O"][l]))                                      # [H, dh, d]
        head_out = g.op("MatMul", [g.op("Transpose", [z], perm=[1, 0, 2]), W_O])         # [H, T, d]
        b_O = g.const(f"b_O_{l}", f32(w["b_O"][l]))
        attn_out = g.op("Add", [g.op("ReduceSum", [head_out, zero1], keepdims=0), b_O])
        resid = g.op("Add", [resid, attn_out])
        head_last = g.op("Gather", [head_out, last], axis=1)                             # [H, 1, d]
        writes_last += [g.op("Reshape", [head_last, g.const(f"shape_hd_{l}", i64([H, d]))]),
                        g.op("Unsqueeze", [b_O, zero1])]
        if has_mlp:
            x2, _ = _layer_norm(g, resid, eps)
            pre = g.op("Add", [g.op("MatMul", [x2, g.const(f"W_in_{l}", f32(w["W_in"][l]))]),
                               g.const(f"b_in_{l}", f32(w["b_in"][l]))])
            # gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = g.op("Mul", [g.op("Mul", [pre, pre]), pre])
            inner = g.op("Mul", [g.op("Add", [pre, g.op("Mul", [cube, g.const(f"gelu_c_{l}", f32(0.044715))])]),
                                 g.const(f"gelu_k_{l}", f32(math.sqrt(2.0 / math.pi)))])
            act = g.op("Mul", [g.op("Mul", [pre, g.const(f"half_{l}", f32(0.5))]),
                               g.op("Add", [g.op("Tanh", [inner]), one_f])])
            mlp_out = g.op("Add", [g.op("MatMul", [act, g.const(f"W_out_{l}", f32(w["W_out"][l]))]),
                                   g.const(f"b_out_{l}", f32(w["b_out"][l]))])
            mkeep = g.op("Gather", ["mlp_keep", f"i_l{l}"], axis=0)                      # scalar
            mfill = g.op("Gather", ["mlp_fill", f"i_l{l}"], axis=0)                      # [d]
            mlp_out = g.op("Add", [g.op("Mul", [mlp_out, mkeep]), g.op("Mul", [mfill, g.op("Sub", [one_f, mkeep])])])
            mlps.append(g.op("Unsqueeze", [mlp_out, zero1]))
            resid = g.op("Add", [resid, mlp_out])
            writes_last.append(g.op("Gather", [mlp_out, last], axis=0))
        states.append(resid)

    g.op("Concat", [g.op("Unsqueeze", [s, zero1]) for s in states], name="resid", axis=0)   # [L+1, T, d]
    normed, scale = _layer_norm(g, "resid", eps)                                          # [L+1, T, d]
    g.op("Add", [g.op("MatMul", [normed, W_U]), b_U], name="lens_logits")
    g.op("Gather", ["lens_logits", g.const("i_final", i64(L))], name="logits", axis=0)       # [T, V]
    final_scale = g.op("Gather", [scale, "i_final"], axis=0)                                 # [T, 1]
    g.op("Reshape", [final_scale, minus1], name="final_scale")                                # [T]
    writers = g.op("Concat", writes_last, axis=0)                                             # [P-1, d]
    wc = g.op("Sub", [writers, g.op("ReduceMean", [writers], axes=[-1], keepdims=1)])
    s_last = g.op("Gather", ["final_scale", last], axis=0)                                    # [1]
    direct = g.op("MatMul", [g.op("Div", [wc, s_last]), W_U])                                 # [P-1, V]
    g.op("Concat", [direct, g.op("Unsqueeze", [b_U, zero1])], name="writer_logits", axis=0)
    g.op("Concat", patterns, name="pattern", axis=0)
    g.op("Concat", zs, name="z", axis=0)
    if has_mlp:
        g.op("Concat", mlps, name="mlp_out", axis=0)

    F = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["T"]),
              helper.make_tensor_value_info("head_keep", F, [L, H]),
              helper.make_tensor_value_info("head_fill", F, [L, H, dh])]
    if has_mlp:
        inputs += [helper.make_tensor_value_info("mlp_keep", F, [L]),
                   helper.make_tensor_value_info("mlp_fill", F, [L, d])]
    P = len(writer_labels(L, H, has_mlp))
    outputs = [helper.make_tensor_value_info("logits", F, ["T", V]),
               helper.make_tensor_value_info("resid", F, [L + 1, "T", d]),
               helper.make_tensor_value_info("lens_logits", F, [L + 1, "T", V]),
               helper.make_tensor_value_info("pattern", F, [L, H, "T", "T"]),
               helper.make_tensor_value_info("z", F, [L, "T", H, dh]),
               helper.make_tensor_value_info("final_scale", F, ["T"]),
               helper.make_tensor_value_info("writer_logits", F, [P, V])]
    if has_mlp:
        outputs.append(helper.make_tensor_value_info("mlp_out", F, [L, "T", d]))
    graph = helper.make_graph(g.nodes, name.replace("-", "_"), inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="residual-stream-lab", producer_version="1")
    model.ir_version = IR_VERSION
    import onnx

    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------- packing the weights
WEIGHTS, WEIGHTS_PACKED = "weights.bin", "weights.bin.gz"


def save_packed(onnx_model, dest: Path) -> int:
    """Save the graph as ``model.onnx`` with its weights in ``weights.bin.gz``; returns the weights' size.

    The weights are ONNX external data (``weights.bin``), stored byte-shuffled and gzip-compressed:
    byte k of every float32 goes to the k-th quarter of the file before compression, so the
    sign-and-exponent bytes sit together and compress well (about 8 % smaller than gzip alone).
    The page undoes both steps (lab/src/lab.js ``unpackWeights``); :func:`unpack_weights` does it here.
    """
    import gzip

    import onnx

    onnx.save_model(onnx_model, str(dest / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=WEIGHTS, size_threshold=1024)
    raw = (dest / WEIGHTS).read_bytes()
    (dest / WEIGHTS).unlink()
    padded = np.frombuffer(raw + bytes(-len(raw) % 4), dtype=np.uint8)
    shuffled = padded.reshape(-1, 4).T.copy().tobytes()
    (dest / WEIGHTS_PACKED).write_bytes(gzip.compress(shuffled, compresslevel=9, mtime=0))
    return len(raw)


def unpack_weights(packed: bytes, n_bytes: int) -> bytes:
    """The inverse of :func:`save_packed`'s packing: gunzip, unshuffle, drop the padding."""
    import gzip

    shuffled = np.frombuffer(gzip.decompress(packed), dtype=np.uint8)
    return shuffled.reshape(4, -1).T.copy().tobytes()[:n_bytes]


def load_shipped(folder: Path, work: Path):
    """An onnxruntime session of the files the site ships (model.onnx + weights.bin.gz)."""
    import onnxruntime as ort

    meta = json.loads((folder / "meta.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "model.onnx", work / "model.onnx")
    (work / WEIGHTS).write_bytes(unpack_weights((folder / WEIGHTS_PACKED).read_bytes(), meta["weights_bytes"]))
    return ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- Python's side
def mean_activations(model) -> dict:
    """Mean z of every head and mean output of every MLP over corpus windows (for mean-ablation)."""
    import torch

    tokens = corpus_windows(model, MEAN_SEQS, MEAN_LEN)
    L = model.cfg.n_layers
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    if not model.cfg.attn_only:
        names += [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = {"head_mean": torch.stack([cache[f"blocks.{l}.attn.hook_z"].mean((0, 1)) for l in range(L)]).tolist()}
    if not model.cfg.attn_only:
        out["mlp_mean"] = torch.stack([cache[f"blocks.{l}.hook_mlp_out"].mean((0, 1)) for l in range(L)]).tolist()
    return out


def corpus_windows(model, n_seqs: int, seq_len: int, seed: int = 1):
    """[n_seqs, seq_len] windows of the book's generated corpus (held-out seed), each starting with BOS
    (documents end with BOS, as in training): the windows the chapters measure on."""
    from helpers.zoo.evals import text_windows

    return text_windows(model.tokenizer, n_seqs, seq_len, seed)


def _helper(name: str):
    """A shared metric from wherever the helpers package keeps it (helpers.core, else the chapter module)."""
    import importlib

    for module in ("helpers.core", "helpers.composition", "helpers.lens"):
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    raise ImportError(f"no helpers module defines {name}")


def mulberry32(seed: int):
    """The lab's random numbers in [0, 1): mulberry32, written the same way in lab/src/lab.js, so the
    page's "repeated random sequence" button and this exporter draw the same tokens."""
    state = seed & 0xFFFFFFFF

    def imul(a, b):
        return (a * b) & 0xFFFFFFFF

    def draw() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = imul(t ^ (t >> 15), t | 1)
        t ^= (t + imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0

    return draw


def lab_repeat_ids(meta: dict, length: int, seed: int) -> list[int]:
    """BOS + R + R as the page's button builds it: R = ``length`` non-special tokens drawn by mulberry32(seed)."""
    special = set(meta["special_ids"])
    allowed = [t for t in range(meta["d_vocab"]) if t not in special]
    draw = mulberry32(seed)
    rand = [allowed[int(draw() * len(allowed))] for _ in range(length)]
    return [meta["bos"]] + rand + rand


def ablation_hooks(model, meta: dict, ablate: dict) -> list:
    """TransformerLens hooks for the lab's interventions.

    ``ablate`` = {"heads": [[layer, head], ...], "mlps": [layer, ...], "mode": "zero" | "mean"};
    layers count from 0, as hook names do.
    """
    import torch

    mode = ablate.get("mode", "zero")
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', got {mode!r}.")
    hooks = []
    by_layer: dict[int, list[int]] = {}
    for layer, head in ablate.get("heads", []):
        by_layer.setdefault(int(layer), []).append(int(head))
    for layer, heads in by_layer.items():
        fill = torch.tensor(meta["head_mean"][layer]) if mode == "mean" else None

        def hook(z, hook=None, heads=tuple(heads), fill=fill):
            z = z.clone()
            for h in heads:
                z[:, :, h] = 0.0 if fill is None else fill[h].to(z.device, z.dtype)
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    for layer in ablate.get("mlps", []):
        fill = torch.tensor(meta["mlp_mean"][int(layer)]) if mode == "mean" else None

        def mhook(out, hook=None, fill=fill):
            return torch.zeros_like(out) if fill is None else fill.to(out.device, out.dtype).expand_as(out).clone()

        hooks.append((f"blocks.{int(layer)}.hook_mlp_out", mhook))
    return hooks


def python_values(model, meta: dict, ids: list[int], target: int, rival: int, ablate: dict | None = None) -> dict:
    """What the lab shows, computed with the chapters' own helpers on the TransformerBridge."""
    import torch

    from helpers import lens

    tokens = torch.tensor([ids])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    hooks = ablation_hooks(model, meta, ablate or {})
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits, cache = model.run_with_cache(tokens)
    with torch.no_grad():
        lens_logits, _ = lens.logit_lens(model, cache, sublayers=False)         # [L+1, 1, T, V]
        lens_logits = lens_logits[:, 0]
        probs = lens_logits.float().softmax(-1)
        top = probs.argmax(-1)                                                   # [L+1, T]
        final = logits[0, -1].float().softmax(-1)
        top5 = final.topk(5)
        patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(L)])  # [L, 1, H, T, T]
    out = {
        "ids": list(ids), "target": target, "rival": rival, "ablate": ablate or {},
        "top_ids": top5.indices.tolist(), "top_probs": top5.values.tolist(),
        "lens_top_ids": top.tolist(), "lens_top_probs": probs.max(-1).values.tolist(),
        "lens_target_rank": lens.token_rank(lens_logits, target).tolist(),
        "lens_target_prob": probs[..., target].tolist(),
        "prev_token_scores": _helper("previous_token_scores")(patterns).tolist() if len(ids) > 1 else None,
        "token_loss": _helper("per_token_loss")(logits, tokens)[0].tolist(),
    }
    if not model.cfg.attn_only:
        labels, contrib, actual = lens.direct_logit_attribution(model, cache, target, rival)
        out.update(dla_labels=labels, dla=contrib.tolist(), logit_diff=actual)
    else:  # chapter 2's DLA with no MLP parts (helpers.lens needs hook_mlp_out)
        out.update(_dla_attn_only(model, cache, target, rival))
    return out


def _dla_attn_only(model, cache, a: int, b: int) -> dict:
    import torch

    L, H = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        parts = [cache["hook_embed"][0, -1], cache["hook_pos_embed"][0, -1]]
        for l in range(L):
            parts += list(torch.einsum("hd,hde->he", cache[f"blocks.{l}.attn.hook_z"][0, -1], model.W_O[l]))
            parts.append(model.b_O[l])
        stack = torch.stack(parts)
        stack = stack - stack.mean(-1, keepdim=True)
        u = model.W_U[:, a] - model.W_U[:, b]
        contrib = (stack / cache["ln_final.hook_scale"][0, -1]) @ u
        contrib = torch.cat([contrib, (model.b_U[a] - model.b_U[b]).reshape(1)])
        final = cache[f"blocks.{L - 1}.hook_resid_post"][0, -1]
        from helpers import lens

        lg = lens.unembed(model, final)
        actual = float(lg[a] - lg[b])
    return {"dla_labels": writer_labels(L, H, False), "dla": contrib.tolist(), "logit_diff": actual}


def reference(model, meta: dict) -> dict:
    """Python's values for the canonical prompts, with and without ablations, and for the page's
    first repeated random sequence (seed 1)."""
    import torch

    cases = []
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ablations = [None, {"heads": [[L - 1, 0], [L - 1, 1]], "mode": "zero"},
                 {"heads": [[0, H - 1]], "mlps": [] if model.cfg.attn_only else [0], "mode": "mean"}]
    for prompt, answer, rival in CANONICAL:
        ids = model.to_tokens(prompt)[0].tolist()
        a, b = int(model.to_single_token(answer)), int(model.to_single_token(rival))
        for abl in ablations if prompt == CANONICAL[0][0] else [None]:
            cases.append({"prompt": prompt, "target_text": answer, "rival_text": rival,
                          **python_values(model, meta, ids, a, b, abl)})
    length = REPEAT_LENGTH
    rep = lab_repeat_ids(meta, length, seed=1)
    case = python_values(model, meta, rep, rep[-1], rep[1])
    with torch.no_grad():
        pats = _helper("attention_patterns")(model, torch.tensor([rep]))
        nll = _helper("per_token_loss")(model(torch.tensor([rep])), torch.tensor([rep]))
    case["prefix_matching_scores"] = _helper("prefix_matching_scores")(pats, length).tolist()
    case["copy_losses"] = list(_helper("copy_losses")(nll, length))
    cases.append({"prompt": None, "repeat_length": length, "seed": 1, **case})
    return {"model": meta["name"], "cases": cases}


def tokenizer_reference(model, n_sentences: int = 240) -> dict:
    """Corpus sentences and edge cases with the Python tokenizer's ids (BOS not included)."""
    from helpers.zoo import corpus

    sentences: list[str] = []
    for doc in corpus.generate_corpus(7, 400):
        for s in doc.replace("\n", " \n ").split(". "):
            s = s.strip(" ")
            if s and s not in sentences:
                sentences.append(s if s.endswith((".", "?", "!", '"')) else s + ".")
        if len(sentences) >= n_sentences:
            break
    edge = ["", " ", "  leading and trailing spaces  ", "Tabs\tand\nnew lines\r\n",
            "Café, naïve, Zürich, Ångström", "東京タワーは東京にあります", "emoji 🙂🚀 and ∑ ≈ ∞",
            "don't you'll we've I'M", "numbers 1234567890 3.14159 -42",
            "<|endoftext|> in the middle <|endoftext|>", "a" * 500,
            " ".join(["The Eiffel Tower is located in Paris."] * 40)]
    rows = [{"text": t, "ids": model.tokenizer.encode(t, add_special_tokens=False)}
            for t in sentences[:n_sentences] + edge]
    return {"bos": int(model.tokenizer.bos_token_id), "cases": rows}


# ----------------------------------------------------------------------------- main
def export(out_dir: Path, names=MODELS) -> None:
    import onnx
    import torch

    from helpers.models import load_model
    from helpers.zoo import BUNDLED_MODELS  # noqa: F401  (fails early if the zoo moved)

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    site, ref = out_dir / "site" / "lab" / "models", out_dir / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    for name in names:
        model = load_model(name, device="cpu")
        folder = ROOT / "helpers" / "zoo" / "models" / name
        dest = site / name
        dest.mkdir(parents=True, exist_ok=True)
        w = bridge_weights(model, name)
        L, H = model.cfg.n_layers, model.cfg.n_heads
        onnx_model = build_graph(w, int(model.cfg.n_ctx), name)
        for old in dest.glob("*"):
            old.unlink()
        weights_bytes = save_packed(onnx_model, dest)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(folder / file, dest / file)
        meta = {"name": name, "n_layers": L, "n_heads": H, "d_model": int(model.cfg.d_model),
                "d_head": int(model.cfg.d_head), "n_ctx": int(model.cfg.n_ctx), "d_vocab": int(model.cfg.d_vocab),
                "has_mlp": not model.cfg.attn_only, "weights_bytes": weights_bytes, "bos": int(model.tokenizer.bos_token_id),
                "writer_labels": writer_labels(L, H, not model.cfg.attn_only),
                "special_ids": sorted(int(i) for i in model.tokenizer.all_special_ids),
                **mean_activations(model)}
        meta = json.loads(json.dumps(meta), parse_float=lambda s: round(float(s), 7))
        (dest / "meta.json").write_text(json.dumps(meta, separators=(",", ":")) + "\n")
        (ref / f"{name}.json").write_text(json.dumps(reference(model, meta)) + "\n")
        if name == names[0]:
            (ref / "tokenizer.json").write_text(json.dumps(tokenizer_reference(model), ensure_ascii=False) + "\n")
        print(f"exported {name}: graph {(dest / 'model.onnx').stat().st_size / 1e3:.0f} kB, weights "
              f"{weights_bytes / 1e6:.2f} MB, packed {(dest / WEIGHTS_PACKED).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python lab/export.py OUT_DIR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    export(Path(sys.argv[1]))
