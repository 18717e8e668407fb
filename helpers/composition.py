"""Composition between attention heads, and the induction circuit it makes possible.

A head in a later layer reads the residual stream, and that stream holds what
earlier heads wrote. Chapter 5 measures this three ways: from the weights
(the QK circuit ``W_QK = W_Q W_Kᵀ`` and OV circuit ``W_OV = W_V W_O`` of each
head, and the Frobenius-norm composition scores of Elhage et al. (2021), "A
Mathematical Framework for Transformer Circuits", with their random-matrix
baseline), from behaviour (previous-token and prefix-matching scores of each
head, and the per-token loss on repeated random tokens, as in Olsson et al.
(2022), "In-context Learning and Induction Heads"), and by intervention.
The module also holds the chapter's figure builders, a tiny attention-only
transformer trained in the chapter (one layer against two), the bundled
model's training log, and the exercise checkers with their reference solutions.
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import (attention_patterns, copy_losses, duplicate_token_scores, per_token_loss, prefix_matching_scores,
                   previous_token_scores, repeated_random_tokens, require_index, require_int, require_model, second_copy_loss,
                   mean_head_hook, zero_head_hook)
from .exercises import Exercise, Mistake
from .plotting import PALETTE, phase_change_figure  # phase_change_figure and training_log are shared with chapter 0
from .zoo.evals import training_log

__all__ = [
    "MODES",
    "qk_circuit",
    "ov_circuit",
    "composition_score",
    "composition_scores",
    "random_composition_baseline",
    "repeated_random_tokens",
    "per_token_loss",
    "copy_losses",
    "previous_token_scores",
    "prefix_matching_scores",
    "duplicate_token_scores",
    "attention_patterns",
    "attention_pattern_figure",
    "composition_heatmap_figure",
    "phase_change_figure",
    "score_grid_figure",
    "training_log",
    "induction_formation_step",
    "AttnOnlyTransformer",
    "induction_task_batch",
    "train_attn_only",
    "PATHS",
    "head_mean_write",
    "path_ablation_losses",
    "check_layer0_prediction",
    "check_reading_path",
    "solution_layer0_prediction",
    "solution_reading_path",
    "check_k_composition_score",
    "check_prefix_matching_score",
    "check_head_ablation_effects",
    "solution_k_composition_score",
    "solution_prefix_matching_score",
    "solution_head_ablation_effects",
]

#: The three ways a later head can read an earlier head's write.
MODES = ("Q", "K", "V")


# ----------------------------------------------------------------------------- circuits
def _check_head(model, layer: int, head: int) -> None:
    cfg = require_model(model)
    require_index("layer", layer, cfg.n_layers)
    require_index("head", head, cfg.n_heads)


def qk_circuit(model, layer: int, head: int):
    """The head's QK circuit ``W_Q W_Kᵀ`` as a ``FactoredMatrix`` [d_model, d_model].

    A query-side stream vector ``x`` and key-side vector ``y`` get the attention
    score ``x W_QK yᵀ`` (before scaling and softmax).
    """
    from transformer_lens import FactoredMatrix

    _check_head(model, layer, head)
    return FactoredMatrix(model.W_Q[layer, head].detach(), model.W_K[layer, head].detach().T)


def ov_circuit(model, layer: int, head: int):
    """The head's OV circuit ``W_V W_O`` as a ``FactoredMatrix`` [d_model, d_model]:
    a source vector ``y`` that is fully attended to adds ``y W_OV`` to the stream."""
    from transformer_lens import FactoredMatrix

    _check_head(model, layer, head)
    return FactoredMatrix(model.W_V[layer, head].detach(), model.W_O[layer, head].detach())


def _dense(m) -> torch.Tensor:
    from transformer_lens import FactoredMatrix

    if isinstance(m, FactoredMatrix):
        return m.AB
    if isinstance(m, torch.Tensor):
        return m
    raise TypeError(f"expected a torch.Tensor or FactoredMatrix, got {type(m).__name__}.")


def composition_score(left, right) -> float:
    """``‖left @ right‖_F / (‖left‖_F ‖right‖_F)`` for two [d, d] matrices (or FactoredMatrix).

    ``left`` is the earlier head's OV circuit; ``right`` is the later head's
    QK circuit (Q-composition), its transpose (K-composition) or its OV
    circuit (V-composition). The score is 1 when the two matrices line up
    perfectly and 0 when the earlier head writes only where the later head
    does not read.
    """
    a, b = _dense(left).double(), _dense(right).double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"composition_score needs [n, d] @ [d, m] matrices, got {tuple(a.shape)} and {tuple(b.shape)}.")
    return float(torch.linalg.norm(a @ b) / (torch.linalg.norm(a) * torch.linalg.norm(b)))


def _gram_norm_sq(a: torch.Tensor, mid: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """‖a · mid · c‖_F² for batched a [.., d, r], mid [.., r, s], c [.., s, d] without
    forming the d×d product: tr((aᵀa) mid (c cᵀ) midᵀ)."""
    ga = a.transpose(-1, -2) @ a          # [.., r, r]
    gc = c @ c.transpose(-1, -2)          # [.., s, s]
    return torch.einsum("...ij,...jk,...kl,...il->...", ga, mid, gc, mid)


def composition_scores(model, mode: str, src_layer: int, dst_layer: int) -> torch.Tensor:
    """Composition scores [n_heads (src), n_heads (dst)] from every head of ``src_layer``
    into every head of the later ``dst_layer``, for ``mode`` in ``MODES``.

    Computed through small d_head × d_head Gram matrices, so it is cheap even
    for GPT-2 (d_model = 768); it equals :func:`composition_score` on the dense
    circuits and TransformerLens's ``all_composition_scores``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    n = model.cfg.n_layers
    for nm, l in (("src_layer", src_layer), ("dst_layer", dst_layer)):
        if not isinstance(l, int) or not 0 <= l < n:
            raise ValueError(f"{nm} must be an int in 0..{n - 1}, got {l!r}.")
    if src_layer >= dst_layer:
        raise ValueError(f"a head can only read what an earlier layer wrote: need src_layer < dst_layer, "
                         f"got {src_layer} and {dst_layer}.")
    with torch.no_grad():
        wv, wo = model.W_V[src_layer].double(), model.W_O[src_layer].double()   # [H, d, dh], [H, dh, d]
        if mode == "V":
            r1, r2 = model.W_V[dst_layer].double(), model.W_O[dst_layer].double()
        else:
            wq, wk = model.W_Q[dst_layer].double(), model.W_K[dst_layer].double()
            r1, r2 = (wq, wk.transpose(-1, -2)) if mode == "Q" else (wk, wq.transpose(-1, -2))
        # left = wv @ wo [H1, d, d]; right = r1 @ r2 [H2, d, d]; product = wv (wo r1) r2
        mid = wo[:, None] @ r1[None]                                        # [H1, H2, dh, dh]
        prod = _gram_norm_sq(wv[:, None], mid, r2[None])                    # [H1, H2]
        eye = torch.eye(wv.shape[-1], dtype=wv.dtype, device=wv.device).expand(wv.shape[0], -1, -1)
        left, right = _gram_norm_sq(wv, eye, wo), _gram_norm_sq(r1, eye, r2)        # [H1], [H2]
        scores = prod.clamp_min(0).sqrt() / (left.sqrt()[:, None] * right.sqrt()[None, :])
    return scores.float().cpu()


def random_composition_baseline(d_model: int, d_head: int, mode: str = "K", n_samples: int = 2000,
                                seed: int = 0) -> torch.Tensor:
    """Composition scores of ``n_samples`` pairs of heads with i.i.d. Gaussian weights.

    The weights have the shapes of a real head (``W_Q, W_K, W_V`` [d_model, d_head],
    ``W_O`` [d_head, d_model]); returns a float tensor [n_samples].
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    for nm, v in (("d_model", d_model), ("d_head", d_head), ("n_samples", n_samples)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}.")
    if d_head > d_model:
        raise ValueError(f"d_head ({d_head}) cannot exceed d_model ({d_model}).")
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(n_samples, *shape, generator=g, dtype=torch.float64)

    wv, wo = w(d_model, d_head), w(d_head, d_model)
    if mode == "V":
        r1, r2 = w(d_model, d_head), w(d_head, d_model)
    else:  # Q and K have the same distribution for random weights: a d×dh times dh×d product
        r1, r2 = w(d_model, d_head), w(d_head, d_model)
    eye = torch.eye(d_head, dtype=torch.float64).expand(n_samples, -1, -1)
    prod = _gram_norm_sq(wv, wo @ r1, r2)
    left, right = _gram_norm_sq(wv, eye, wo), _gram_norm_sq(r1, eye, r2)
    return (prod.sqrt() / (left.sqrt() * right.sqrt())).float()


# ------------------------------------------------------------------ behaviour of heads
# ----------------------------------------------------------------------------- figures
def attention_pattern_figure(patterns: dict, str_tokens: Sequence[str], title: str, active: int = 0):
    """Heatmaps of several heads' patterns on one sequence, with a dropdown to pick the head.

    ``patterns`` maps a label (e.g. ``"L1H2 · induction"``) to a [q_pos, k_pos]
    array. Works in the static book: the dropdown swaps data stored in the figure.
    """
    import plotly.graph_objects as go

    if not isinstance(patterns, dict) or not patterns:
        raise ValueError("patterns must be a non-empty dict {label: [q_pos, k_pos] array}.")
    labels = list(patterns)
    mats = [np.round(np.asarray(torch.as_tensor(patterns[k]).detach().cpu().float()), 3) for k in labels]
    n = len(str_tokens)
    for k, m in zip(labels, mats):
        if m.shape != (n, n):
            raise ValueError(f"pattern {k!r} has shape {m.shape}; expected ({n}, {n}) to match str_tokens.")
    if not 0 <= active < len(labels):
        raise ValueError(f"active must index a head (0..{len(labels) - 1}), got {active}.")
    ticks = [f"{i}:{s}" for i, s in enumerate(str_tokens)]
    fig = go.Figure(go.Heatmap(z=mats[active], x=ticks, y=ticks, colorscale="Blues", zmin=0, zmax=1,
                               colorbar={"title": {"text": "attention"}},
                               hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>"))
    buttons = [{"method": "update", "label": k, "args": [{"z": [m.tolist()]}, {"title.text": f"{title} — {k}"}]}
               for k, m in zip(labels, mats)]
    fig.update_layout(title=f"{title} — {labels[active]}", height=620,
                      xaxis_title="key position (attended to)", yaxis_title="query position (attending)",
                      updatemenus=[{"buttons": buttons, "active": active, "x": 1.0, "xanchor": "right",
                                    "y": 1.12, "yanchor": "top", "direction": "down"}],
                      meta={"view": labels[active]})   # the view it opens on (checked by helpers.show)
    fig.update_yaxes(autorange="reversed", showticklabels=n <= 40)
    fig.update_xaxes(showticklabels=n <= 40, tickangle=-60)
    return fig


def composition_heatmap_figure(scores: dict, src_layer: int, dst_layer: int, baseline: float, title: str):
    """Heatmap of composition scores [src head, dst head] with buttons for Q, K and V.

    ``scores`` maps a mode ("Q", "K", "V") to an [n_heads, n_heads] array;
    ``baseline`` (the random-matrix mean) sets the middle of the colour scale, so
    pairs above chance are red and pairs at chance are white.
    """
    import plotly.graph_objects as go

    if not isinstance(scores, dict) or not scores or any(m not in MODES for m in scores):
        raise ValueError(f"scores must map some of {MODES} to [n_heads, n_heads] arrays.")
    mats = {m: np.round(np.asarray(torch.as_tensor(v).detach().cpu().float()), 4) for m, v in scores.items()}
    shapes = {v.shape for v in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every score matrix must have the same 2-D shape, got {shapes}.")
    n_src, n_dst = next(iter(shapes))
    zmax = float(max(v.max() for v in mats.values()))
    x = [f"L{dst_layer}H{h}" for h in range(n_dst)]
    y = [f"L{src_layer}H{h}" for h in range(n_src)]
    modes = list(mats)
    first = modes[0]
    fig = go.Figure(go.Heatmap(z=mats[first], x=x, y=y, text=mats[first], texttemplate="%{text:.3f}",
                               colorscale="RdBu", reversescale=True, zmin=0, zmid=baseline, zmax=max(zmax, 2 * baseline),
                               colorbar={"title": {"text": "score"}},
                               hovertemplate="%{y} → %{x}<br>score %{z:.4f}<extra></extra>"))
    buttons = [{"method": "update", "label": f"{m}-composition",
                "args": [{"z": [mats[m].tolist()], "text": [mats[m].tolist()]}, {"title.text": f"{title} ({m})"}]}
               for m in modes]
    fig.update_layout(title=f"{title} ({first})", xaxis_title=f"reading head (layer {dst_layer})",
                      yaxis_title=f"writing head (layer {src_layer})", height=460,
                      updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "active": 0,
                                    "x": 0.0, "xanchor": "left", "y": 1.13, "yanchor": "top"}],
                      meta={"view": f"{first}-composition"})
    fig.update_yaxes(autorange="reversed")
    return fig


def score_grid_figure(grids: dict, title: str, colorbar_title: str = "score", zmin: float | None = None,
                      zmax: float | None = None, x_labels: Sequence[str] | None = None,
                      y_labels: Sequence[str] | None = None, xaxis_title: str = "head",
                      yaxis_title: str = "layer"):
    """One heatmap per entry of ``grids`` (label -> 2-D array, all the same shape), with
    buttons to switch between them. Cells show their value; the title names the grid."""
    import plotly.graph_objects as go

    if not isinstance(grids, dict) or not grids:
        raise ValueError("grids must be a non-empty dict {label: 2-D array}.")
    mats = {k: np.round(np.asarray(torch.as_tensor(v).detach().cpu().float()), 3) for k, v in grids.items()}
    shapes = {v.shape for v in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every grid must have the same 2-D shape, got {shapes}.")
    n_rows, n_cols = next(iter(shapes))
    x = list(x_labels) if x_labels is not None else [str(i) for i in range(n_cols)]
    y = list(y_labels) if y_labels is not None else [str(i) for i in range(n_rows)]
    if len(x) != n_cols or len(y) != n_rows:
        raise ValueError(f"labels ({len(y)} rows, {len(x)} columns) do not match the grids' shape {(n_rows, n_cols)}.")
    labels = list(mats)
    lo = min(float(v.min()) for v in mats.values()) if zmin is None else zmin
    hi = max(float(v.max()) for v in mats.values()) if zmax is None else zmax
    show_text = n_rows * n_cols <= 200 and n_cols <= 16   # wider grids would need unreadably small cell text
    first = mats[labels[0]]
    fig = go.Figure(go.Heatmap(z=first, x=x, y=y, colorscale="Blues", zmin=lo, zmax=hi,
                               text=first if show_text else None, texttemplate="%{text:.2f}" if show_text else None,
                               colorbar={"title": {"text": colorbar_title}},
                               hovertemplate="%{y} · %{x}<br>%{z:.3f}<extra></extra>"))
    if len(labels) > 1:
        buttons = [{"method": "update", "label": k,
                    "args": [{"z": [v.tolist()], "text": [v.tolist()] if show_text else [None]},
                             {"title.text": f"{title} — {k}"}]} for k, v in mats.items()]
        fig.update_layout(updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "active": 0,
                                        "x": 0.0, "xanchor": "left", "y": 1.15, "yanchor": "top"}],
                          meta={"view": labels[0]})
    fig.update_layout(title=f"{title} — {labels[0]}" if len(labels) > 1 else title, xaxis_title=xaxis_title,
                      yaxis_title=yaxis_title, height=max(360, 60 * n_rows + 220))
    fig.update_yaxes(autorange="reversed")
    return fig


# ------------------------------------------------------------------- the training log
def induction_formation_step(log: Sequence[dict], key: str = "best_prefix_matching", frac: float = 0.5) -> int:
    """The first logged step at which ``key`` has covered ``frac`` of its rise from its
    first value to its final value: our operational 'moment the induction head forms'."""
    if not log or key not in log[0]:
        raise ValueError(f"log must be a non-empty list of dicts with key {key!r}.")
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), got {frac}.")
    first, last = log[0][key], log[-1][key]
    level = first + frac * (last - first)
    for entry in log:
        if (entry[key] - level) * (1 if last >= first else -1) >= 0:
            return int(entry["step"])
    return int(log[-1]["step"])  # pragma: no cover - the last entry always qualifies


# ----------------------------------------------------- a tiny model trained in-chapter
class AttnOnlyTransformer(nn.Module):
    """A minimal attention-only transformer: embeddings, ``n_layers`` blocks of causal
    multi-head attention added to the stream, unembedding. No LayerNorm, no MLP."""

    def __init__(self, d_vocab: int, n_ctx: int, d_model: int, n_heads: int, n_layers: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}.")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.embed = nn.Embedding(d_vocab, d_model)
        self.pos_embed = nn.Embedding(n_ctx, d_model)
        self.qkv = nn.ModuleList(nn.Linear(d_model, 3 * d_model, bias=False) for _ in range(n_layers))
        self.out = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, d_vocab, bias=False)
        self.register_buffer("causal", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)

    def forward(self, tokens: torch.Tensor, return_patterns: bool = False):
        b, t = tokens.shape
        h = self.embed(tokens) + self.pos_embed.weight[:t]                       # (B, T, d)
        patterns = []
        for qkv, out in zip(self.qkv, self.out):
            q, k, v = qkv(h).view(b, t, 3, self.n_heads, self.d_head).unbind(2)  # (B, T, H, dh) each
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.d_head)
            pattern = scores.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)  # (B, H, T, T)
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v).reshape(b, t, -1)
            h = h + out(z)                                                     # the head writes back
            patterns.append(pattern)
        logits = self.unembed(h)
        return (logits, patterns) if return_patterns else logits


def induction_task_batch(n: int, d_vocab: int, n_ctx: int, min_span: int, max_span: int,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens (id 0 is BOS at position 0) with one random span of random length
    in [min_span, max_span] repeated right after itself at a random offset.

    Returns ``tokens`` [n, n_ctx] and ``predictable`` [n, n_ctx - 1], True where the
    next token is a second-copy token that induction can predict (all but its first).
    Varying length and offset means no fixed positional offset solves the task.
    """
    if not 1 <= min_span <= max_span or 1 + 2 * max_span > n_ctx:
        raise ValueError(f"need 1 <= min_span <= max_span and 1 + 2*max_span <= n_ctx; got "
                         f"{min_span}, {max_span}, {n_ctx}.")
    if d_vocab < 3:
        raise ValueError("d_vocab must be at least 3 (BOS plus two tokens).")
    tokens = torch.randint(1, d_vocab, (n, n_ctx), generator=generator)
    tokens[:, 0] = 0
    predictable = torch.zeros(n, n_ctx, dtype=torch.bool)
    spans = torch.randint(min_span, max_span + 1, (n,), generator=generator)
    for i, span in enumerate(spans.tolist()):
        start = 1 + int(torch.randint(0, n_ctx - 2 * span, (1,), generator=generator))
        tokens[i, start + span:start + 2 * span] = tokens[i, start:start + span]
        predictable[i, start + span + 1:start + 2 * span] = True
    return tokens, predictable[:, 1:]


def train_attn_only(n_layers: int, steps: int = 500, d_vocab: int = 48, n_ctx: int = 24, d_model: int = 32,
                    n_heads: int = 2, span: tuple[int, int] = (3, 10), batch: int = 64, lr: float = 1e-2,
                    eval_every: int = 25, seed: int = 0):
    """Train an :class:`AttnOnlyTransformer` on :func:`induction_task_batch` with Adam.

    Returns ``(model, history)``; ``history`` lists ``{"step", "loss_repeated",
    "loss_other"}``: mean next-token loss (nats) on a fixed evaluation batch, on
    the predictable second-copy tokens and on all other tokens.
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}.")
    if not isinstance(steps, int) or steps < 1 or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError("steps and eval_every must be positive ints.")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small run fastest (and repeatably) on one thread
    try:
        with torch.enable_grad():  # chapters may have switched gradients off globally
            return _train_attn_only(n_layers, steps, d_vocab, n_ctx, d_model, n_heads, span, batch, lr,
                                    eval_every, seed)
    finally:
        torch.set_num_threads(threads)


def _train_attn_only(n_layers, steps, d_vocab, n_ctx, d_model, n_heads, span, batch, lr, eval_every, seed):
    torch.manual_seed(seed)
    model = AttnOnlyTransformer(d_vocab, n_ctx, d_model, n_heads, n_layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g_train = torch.Generator().manual_seed(seed)
    x_eval, m_eval = induction_task_batch(256, d_vocab, n_ctx, *span, torch.Generator().manual_seed(seed + 10_000))
    history = []
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                nll = F.cross_entropy(model(x_eval[:, :-1]).transpose(1, 2), x_eval[:, 1:], reduction="none")
            history.append({"step": step, "loss_repeated": float(nll[m_eval].mean()),
                            "loss_other": float(nll[~m_eval].mean())})
        if step == steps:
            break
        x, _ = induction_task_batch(batch, d_vocab, n_ctx, *span, g_train)
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, d_vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, history


# ------------------------------------------------------------------------- exercises
def solution_k_composition_score(W_V1: torch.Tensor, W_O1: torch.Tensor, W_Q2: torch.Tensor,
                                 W_K2: torch.Tensor) -> float:
    """Reference: K-composition score of head 1 (V, O) into head 2 (Q, K)."""
    ov = W_V1 @ W_O1                 # [d, d] what head 1 writes
    qk = W_Q2 @ W_K2.T               # [d, d] where head 2 looks
    # head 2's key side reads x W_OV, so the relevant product is W_OV W_QKᵀ (row vectors)
    return float(torch.linalg.norm(ov @ qk.T) / (torch.linalg.norm(ov) * torch.linalg.norm(qk)))


def _k_composition_cases():
    g = torch.Generator().manual_seed(5)
    cases = []
    for d, dh in ((6, 2), (16, 4)):
        ws = [torch.randn(d, dh, generator=g, dtype=torch.float64), torch.randn(dh, d, generator=g, dtype=torch.float64),
              torch.randn(d, dh, generator=g, dtype=torch.float64), torch.randn(d, dh, generator=g, dtype=torch.float64)]
        cases.append((tuple(ws), {}))
    # a designed pair: head 1 writes exactly what head 2's keys read, so the score is high
    w_v = torch.eye(6, 2, dtype=torch.float64)
    cases.append(((w_v, torch.eye(2, 6, dtype=torch.float64), torch.eye(6, 2, dtype=torch.float64), w_v), {}))
    return cases


def _q_composition_score(W_V1, W_O1, W_Q2, W_K2) -> float:
    ov, qk = W_V1 @ W_O1, W_Q2 @ W_K2.T
    return float(torch.linalg.norm(ov @ qk) / (torch.linalg.norm(ov) * torch.linalg.norm(qk)))


K_COMPOSITION_SCORE = Exercise(
    "ch5.k-composition-score", "k_composition_score", solution_k_composition_score, _k_composition_cases,
    mistakes=[
        Mistake(_q_composition_score, "you computed the Q-composition score ‖W_OV W_QK‖. Head 2's *keys* read the "
                "stream, so transpose the QK circuit: ‖W_OV W_QKᵀ‖ / (‖W_OV‖ ‖W_QK‖)."),
        Mistake(lambda a, b, c, d: float(torch.linalg.norm((a @ b) @ (c @ d.T).T)),
                "the score is normalised: divide ‖W_OV W_QKᵀ‖ by ‖W_OV‖ ‖W_QK‖, so it does not grow with the weights' size."),
    ],
)


def check_k_composition_score(fn) -> bool:
    """Checker for the exercise 'compute a K-composition score'."""
    return K_COMPOSITION_SCORE.check(fn)


def solution_prefix_matching_score(pattern: torch.Tensor, length: int) -> float:
    """Reference: prefix-matching score of one head, pattern [batch, q_pos, k_pos] on BOS + R + R."""
    return _pattern_score(pattern, length, 1)  # the token after the earlier occurrence


def _pattern_score(pattern: torch.Tensor, length: int, offset: int) -> float:
    q = torch.arange(length + 1, 2 * length + 1)       # second-copy positions
    return float(pattern[:, q, q - length + offset].mean())


def _prefix_matching_cases(model=None):
    g = torch.Generator().manual_seed(7)
    cases = []
    for b, length in ((2, 4), (3, 7)):
        t = 1 + 2 * length
        raw = torch.rand(b, t, t, generator=g, dtype=torch.float64).tril()
        cases.append(((raw / raw.sum(-1, keepdim=True), length), {}))
    if model is not None:
        pats = attention_patterns(model, repeated_random_tokens(model, n_seqs=2, length=10, seed=3))
        cases += [((pats[l, :, 0], 10), {}) for l in range(pats.shape[0])]
    return cases


_PREFIX_WHY = ("An induction head attends from a token at position q in the second copy to q − length + 1: "
               "the token *after* that token's first occurrence.")

PREFIX_MATCHING_SCORE = Exercise(
    "ch5.prefix-matching-score", "prefix_matching_score", solution_prefix_matching_score, _prefix_matching_cases,
    mistakes=[
        Mistake(lambda p, n: _pattern_score(p, n, 0), "you measured attention to the earlier occurrence itself "
                "(a duplicate-token score). " + _PREFIX_WHY),
        Mistake(lambda p, n: float(p[:, torch.arange(n + 1, 2 * n + 1), torch.arange(n, 2 * n)].mean()),
                "you measured attention to the previous position (a previous-token score). " + _PREFIX_WHY),
    ],
)


def check_prefix_matching_score(fn, model=None) -> bool:
    """Checker for the exercise 'write a prefix-matching score'."""
    return PREFIX_MATCHING_SCORE.check(fn, None if model is None else _prefix_matching_cases(model))


def _ablation_effects(model, tokens: torch.Tensor, loss) -> torch.Tensor:
    """[n_layers, n_heads]: loss with one head zeroed minus the clean loss, for every head."""
    base = loss([])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            out[l, h] = loss([(f"blocks.{l}.attn.hook_z", zero_head_hook(h))]) - base
    return out


def solution_head_ablation_effects(model, tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Reference: [n_layers, n_heads] rise in mean second-copy loss (nats, tokens 2..length of
    the second copy) when one head's output is zeroed (``hook_z`` set to 0)."""
    return _ablation_effects(model, tokens, lambda hooks: second_copy_loss(model, tokens, length, hooks))


def _whole_sequence_effects(model, tokens: torch.Tensor, length: int) -> torch.Tensor:
    def loss(hooks):
        with torch.no_grad():
            return float(per_token_loss(model.run_with_hooks(tokens, fwd_hooks=hooks), tokens).mean())
    return _ablation_effects(model, tokens, loss)


def _ablation_cases(model=None, length: int = 20):
    if model is None:
        from .models import load_model

        model = load_model("rs-attn-2l")
    short = max(2, length // 2)
    return [((model, repeated_random_tokens(model, n_seqs=4, length=length, seed=3), length), {}),
            ((model, repeated_random_tokens(model, n_seqs=4, length=short, seed=4), short), {})]


HEAD_ABLATION_EFFECTS = Exercise(
    "ch5.head-ablation-effects", "head_ablation_effects", solution_head_ablation_effects, _ablation_cases,
    mistakes=[
        Mistake(lambda m, t, n: -solution_head_ablation_effects(m, t, n), "the signs are flipped. Report ablated "
                "loss minus clean loss, so a head the circuit needs gets a positive number."),
        Mistake(_whole_sequence_effects, "you averaged the loss over the whole sequence; the first copy is random "
                "and no head can help there. Average over the second copy only: per_token_loss(logits, tokens)[:, length + 1:]."),
    ],
    atol=2e-3,
    rtol=1e-2,
)


def check_head_ablation_effects(fn, model, length: int = 20) -> bool:
    """Checker for the exercise 'find the circuit by ablation'."""
    return HEAD_ABLATION_EFFECTS.check(fn, _ablation_cases(model, length))


# ------------------------------------------------------- which input a head is read through
#: The inputs of a later layer through which an earlier head's write can be removed, and the direct path.
PATHS = ("Q", "K", "V", "direct")


def head_mean_write(model, tokens: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """The head's ``hook_z`` averaged over the batch and positions of ``tokens`` [d_head]:
    the value a mean ablation puts in its place."""
    _check_head(model, layer, head)
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    return cache[name][:, :, head].mean((0, 1))


def path_ablation_losses(model, tokens: torch.Tensor, length: int, layer: int, head: int,
                         reader: int | None = None) -> dict:
    """(first-copy, second-copy) loss on BOS + R + R when head ``(layer, head)`` is mean-ablated
    only where layer ``reader`` (default ``layer + 1``) reads it through its queries ("Q"),
    keys ("K") or values ("V"), only on the direct path to the logits ("direct"), or
    everywhere ("all"); "every path" removes it from all four at once, and "clean" is the unablated run.

    For one input, that input of layer ``reader`` gets the normalised stream of a run in
    which the head is mean-ablated, and the other two inputs keep the clean stream (so for
    ``reader = layer + 1`` exactly this head's write is removed from that input, nothing
    else). "direct" subtracts the head's write minus its mean from the final stream.
    """
    cfg = require_model(model)
    _check_head(model, layer, head)
    if layer + 1 >= cfg.n_layers:
        raise ValueError(f"no later layer reads head L{layer}H{head}: reader must follow layer {layer}, "
                         f"and the model has {cfg.n_layers} layers.")
    reader = require_int("reader", layer + 1 if reader is None else reader, layer + 1, cfg.n_layers - 1,
                         note="a layer after the head's")
    names = {s: f"blocks.{reader}.attn.{s.lower()}.hook_in" for s in "QKV"}
    missing = [n for n in names.values() if n not in model.hook_dict]
    if missing:
        raise ValueError(f"this model has no separate query/key/value input hooks ({missing[0]}); "
                         "path ablation needs a model whose bridge exposes them.")
    mean = head_mean_write(model, tokens, layer, head)
    ablate = [(f"blocks.{layer}.attn.hook_z", mean_head_hook(head, mean))]
    ln_name = f"blocks.{reader}.ln1.hook_out"
    z_name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        with model.hooks(fwd_hooks=ablate):
            _, abl = model.run_with_cache(tokens, names_filter=lambda n: n == ln_name)
        _, clean = model.run_with_cache(tokens, names_filter=lambda n: n == z_name)
    ablated_in = abl[ln_name]
    delta = (clean[z_name][:, :, head] - mean) @ model.W_O[layer, head]      # [batch, pos, d_model]

    def losses(hooks):
        with torch.no_grad():
            return copy_losses(per_token_loss(model.run_with_hooks(tokens, fwd_hooks=hooks), tokens), length)

    def put(x, hook=None):
        return ablated_in.to(x.dtype).clone()

    out = {"clean": losses([]), "all": losses(ablate)}
    for s, n in names.items():
        out[s] = losses([(n, put)])
    direct = (f"blocks.{cfg.n_layers - 1}.hook_resid_post", lambda x, hook=None: x - delta)
    out["direct"] = losses([direct])
    # all four at once: in a two-layer attention-only model these are the only routes, so this equals "all"
    out["every path"] = losses([(n, put) for n in names.values()] + [direct])
    return out


# ----------------------------------------------------------------- prediction exercises
def _bundled_circuit():
    """(second-copy loss under mean ablation of each layer-0 head, path losses of the
    self-attending head) on the bundled rs-attn-2l, computed once."""
    global _CIRCUIT
    if _CIRCUIT is None:
        from .models import load_model

        m = load_model("rs-attn-2l")
        toks = repeated_random_tokens(m, n_seqs=16, length=50, seed=0)
        second = []
        for h in range(m.cfg.n_heads):
            hook = [("blocks.0.attn.hook_z", mean_head_hook(h, head_mean_write(m, toks, 0, h)))]
            second.append(second_copy_loss(m, toks, 50, hook))
        worst = int(np.argmax(second))
        _CIRCUIT = (second, path_ablation_losses(m, toks, 50, 0, worst))
    return _CIRCUIT


_CIRCUIT = None


def solution_layer0_prediction() -> tuple:
    """Reference: the layer-0 head of rs-attn-2l whose mean ablation raises the second-copy loss most."""
    second, _ = _bundled_circuit()
    return (0, int(np.argmax(second)))


LAYER0_PREDICTION = Exercise("ch5.layer0-prediction", "predicted_head", solution_layer0_prediction)
check_layer0_prediction = LAYER0_PREDICTION.check_value


def solution_reading_path() -> str:
    """Reference: the input of layer 1 ("Q", "K", "V" or "direct") through which the
    self-attending layer-0 head of rs-attn-2l matters most for the second copy."""
    _, paths = _bundled_circuit()
    return max(PATHS, key=lambda s: paths[s][1])


READING_PATH = Exercise("ch5.reading-path", "predicted_path", solution_reading_path)


def check_reading_path(answer) -> bool:
    """Checker for the exercise 'predict through which input the self-attending head is read'."""
    if isinstance(answer, str):
        answer = answer.strip().upper() if answer.strip().lower() != "direct" else "direct"
    return READING_PATH.check_value(answer)
