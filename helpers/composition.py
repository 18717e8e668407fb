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
    "route_tie",
    "resampled_path_losses",
    "check_top2_prediction",
    "ROLES",
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


def solution_prefix_matching_score(pattern: torch.Tensor, length: int, gap: int) -> float:
    """Reference: prefix-matching score of one head, pattern [batch, q_pos, k_pos] on
    BOS + R + G + R, with |R| = ``length`` and ``gap`` fresh tokens G between the copies."""
    return _pattern_score(pattern, length, 1, gap)  # the token after the earlier occurrence


def _pattern_score(pattern: torch.Tensor, length: int, offset: int, gap: int = 0, shift_queries: bool = True) -> float:
    start = 1 + length + (gap if shift_queries else 0)       # first position of the second copy
    q = torch.arange(start, start + length)
    return float(pattern[:, q, q - length - gap + offset].mean())


def _gapped_tokens(model, length: int, gap: int, seed: int) -> torch.Tensor:
    """BOS + R + G + R [2, 1 + 2·length + gap]: two sequences with ``gap`` fresh random tokens between the copies."""
    rep = repeated_random_tokens(model, n_seqs=2, length=length, seed=seed)
    fresh = repeated_random_tokens(model, n_seqs=2, length=max(gap, 1), seed=seed + 1)[:, 1:1 + gap]
    return torch.cat([rep[:, :1 + length], fresh, rep[:, 1 + length:]], dim=1)


def _prefix_matching_cases(model=None):
    g = torch.Generator().manual_seed(7)
    cases = []
    for b, length, gap in ((2, 4, 0), (3, 7, 3), (2, 5, 2)):
        t = 1 + 2 * length + gap
        raw = torch.rand(b, t, t, generator=g, dtype=torch.float64).tril()
        cases.append(((raw / raw.sum(-1, keepdim=True), length, gap), {}))
    if model is not None:
        for gap in (0, 5):
            pats = attention_patterns(model, _gapped_tokens(model, 10, gap, seed=3))
            cases += [((pats[l, :, h], 10, gap), {}) for l in range(pats.shape[0]) for h in range(min(2, pats.shape[2]))]
    return cases


_PREFIX_WHY = ("In BOS + R + G + R the second copy starts at 1 + length + gap, and a token at q first occurred at "
               "q − length − gap; an induction head attends to the token after it, q − length − gap + 1.")

PREFIX_MATCHING_SCORE = Exercise(
    "ch5.prefix-matching-score", "prefix_matching_score", solution_prefix_matching_score, _prefix_matching_cases,
    mistakes=[
        Mistake(lambda p, n, g: _pattern_score(p, n, 1, 0, shift_queries=False),
                "you kept the formula for BOS + R + R: with a gap the second copy starts later and the earlier "
                "occurrence is length + gap positions back. " + _PREFIX_WHY),
        Mistake(lambda p, n, g: _pattern_score(p, n, 0, g), "you measured attention to the earlier occurrence itself "
                "(a duplicate-token score). " + _PREFIX_WHY),
        Mistake(lambda p, n, g: _pattern_score(p, n, 1 + g, g),
                "you shifted the queries by the gap but kept the distance back at length: the earlier occurrence "
                "is length + gap positions back. " + _PREFIX_WHY),
    ],
)


def check_prefix_matching_score(fn, model=None) -> bool:
    """Checker for the exercise 'a prefix-matching score when the copies are apart' (the model's
    own patterns are added to the cases when ``model`` is given)."""
    return PREFIX_MATCHING_SCORE.check(fn, None if model is None else _prefix_matching_cases(model))


def _ablation_effects(model, tokens: torch.Tensor, loss, hook=zero_head_hook) -> torch.Tensor:
    """[n_layers, n_heads]: loss with one head's output replaced (by ``hook(head)``) minus the clean loss."""
    base = loss([])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            out[l, h] = loss([(f"blocks.{l}.attn.hook_z", hook(h))]) - base
    return out


def solution_head_ablation_effects(model, tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Reference: [n_layers, n_heads] rise in mean second-copy loss (nats, tokens 2..length of
    the second copy) when one head's output is zeroed (``hook_z`` set to 0)."""
    return _ablation_effects(model, tokens, lambda hooks: second_copy_loss(model, tokens, length, hooks))


def _loss_from(model, tokens, start: int):
    def loss(hooks):
        with torch.no_grad():
            return float(per_token_loss(model.run_with_hooks(tokens, fwd_hooks=hooks), tokens)[:, start:].mean())
    return loss


def _mean_ablation_effects(model, tokens: torch.Tensor, length: int) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    loss = _loss_from(model, tokens, length + 1)
    base = loss([])
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            mean = cache[f"blocks.{l}.attn.hook_z"][:, :, h].mean((0, 1))
            out[l, h] = loss([(f"blocks.{l}.attn.hook_z", mean_head_hook(h, mean))]) - base
    return out


def _ablation_cases():
    from .models import load_model

    model = load_model("rs-attn-2l")   # the bundled organism, whatever the chapter runs on: 9 forward passes a case
    return [((model, repeated_random_tokens(model, n_seqs=4, length=20, seed=3), 20), {}),
            ((model, repeated_random_tokens(model, n_seqs=4, length=10, seed=4), 10), {})]


HEAD_ABLATION_EFFECTS = Exercise(
    "ch5.head-ablation-effects", "head_ablation_effects", solution_head_ablation_effects, _ablation_cases,
    mistakes=[
        Mistake(lambda m, t, n: -solution_head_ablation_effects(m, t, n), "the signs are flipped. Report ablated "
                "loss minus clean loss, so a head the circuit needs gets a positive number."),
        Mistake(lambda m, t, n: _ablation_effects(m, t, _loss_from(m, t, 0)), "you averaged the loss over the whole "
                "sequence; the first copy is random and no head can help there. Average over the second copy only: "
                "per_token_loss(logits, tokens)[:, length + 1:]."),
        Mistake(lambda m, t, n: _ablation_effects(m, t, _loss_from(m, t, n)), "your average includes the first "
                "token of the second copy (per_token_loss(...)[:, length:]). Nothing in the context predicts that "
                "token, so it only adds noise: start at [:, length + 1:]."),
        Mistake(_mean_ablation_effects, "you put each head's mean output in its place (mean ablation). This "
                "exercise zeroes the head's output: z[:, :, head] = 0."),
    ],
    atol=2e-3,
    rtol=1e-2,
)


def check_head_ablation_effects(fn) -> bool:
    """Checker for the exercise 'find the circuit by ablation' (runs on the bundled rs-attn-2l,
    whatever model the chapter uses, so it stays cheap)."""
    return HEAD_ABLATION_EFFECTS.check(fn)


#: The kinds of head a prediction can name (the chapter labels every head with one of them).
ROLES = ("self-attending", "previous-token", "duplicate-token", "induction", "other")


def _top2_roles(effects, roles: dict) -> str:
    """The kinds of the two heads with the largest effects, sorted and joined: 'induction + self-attending'."""
    e = torch.as_tensor(effects)
    top = [divmod(int(i), e.shape[1]) for i in e.flatten().topk(2).indices]
    return " + ".join(sorted(roles.get(h, "other") for h in top))


def _top2_cases():
    roles = {(0, 0): "self-attending", (0, 1): "previous-token", (0, 2): "previous-token", (0, 3): "previous-token",
             (1, 0): "induction", (1, 1): "duplicate-token", (1, 2): "induction", (1, 3): "induction"}
    organism_like = torch.tensor([[7.2, 0.1, 0.5, 1.8], [3.3, 0.1, 1.7, 3.6]])
    partners_first = torch.tensor([[0.2, 5.0, 4.0, 0.3], [1.0, 0.1, 0.5, 0.4]])
    return [((organism_like, roles), {}), ((partners_first, roles), {})]


TOP2_PREDICTION = Exercise(
    "ch5.ablation-top2-prediction", "predicted_top2", _top2_roles, _top2_cases,
    mistakes=[
        Mistake(lambda e, r: "induction + previous-token",
                "you predicted from the attention patterns: the sharpest previous-token head looks essential, but "
                "the other previous-token heads back it up, so zeroing it alone costs less than zeroing a head "
                "nothing backs up."),
        Mistake(lambda e, r: "induction + induction",
                "the induction heads share the work, so zeroing one of them costs less than zeroing a head that "
                "no other head can replace."),
        Mistake(lambda e, r: "previous-token + self-attending",
                "the induction heads are backed up by each other, but under zero ablation, this exercise's "
                "intervention, the best of them still costs more to remove than one of the redundant previous-token "
                "heads. (Section 5's resample ablation orders them the other way: zeroing also removes what a head "
                "typically writes, which the model never sees missing in training.)"),
    ],
)


def check_top2_prediction(predicted, effects, roles: dict) -> bool:
    """Exercise: the kinds of the two heads whose zeroing hurts the second copy most (two of
    :data:`ROLES`, any order), checked against ``effects`` [n_layers, n_heads] measured in the chapter."""
    from .exercises import CheckFailed

    if predicted is not Ellipsis:
        if (not isinstance(predicted, (tuple, list)) or len(predicted) != 2
                or any(p not in ROLES for p in predicted)):
            raise CheckFailed(f"predicted_top2: give two kinds from {ROLES}, e.g. ('induction', 'other'); "
                              f"got {predicted!r}.")
        predicted = " + ".join(sorted(predicted))
    return TOP2_PREDICTION.check_prediction(predicted, effects, roles)


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
                         reader: int | None = None, replacement: torch.Tensor | None = None,
                         per_sequence: bool = False) -> dict:
    """(first-copy, second-copy) loss on BOS + R + R when head ``(layer, head)`` is ablated
    only where layer ``reader`` (default ``layer + 1``) reads it through its queries ("Q"),
    keys ("K") or values ("V"), only on the direct path to the logits ("direct"), or
    everywhere ("all"); "every path" removes it from all four at once, and "clean" is the unablated run.

    ``replacement`` is what the head's ``hook_z`` becomes: [batch, pos, d_head] (for a
    resample ablation, the head's output on other sequences), [pos, d_head] or [d_head];
    by default its mean over ``tokens`` (:func:`head_mean_write`). For one input, that input
    of layer ``reader`` gets the normalised stream of the ablated run, and the other two
    inputs keep the clean stream (so for ``reader = layer + 1`` exactly this head's write is
    removed from that input, nothing else). "direct" subtracts the head's write minus the
    replacement's from the final stream.

    With ``per_sequence``, each entry also carries the second-copy loss of every sequence
    [batch], (first, second, per_sequence), so that two routes can be compared with a paired
    standard error (:func:`route_tie`).
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
    if replacement is None:
        replacement = head_mean_write(model, tokens, layer, head)
    else:
        want = {3: (*tokens.shape, cfg.d_head), 2: (tokens.shape[1], cfg.d_head), 1: (cfg.d_head,)}
        shape = tuple(replacement.shape) if isinstance(replacement, torch.Tensor) else None
        if shape is None or shape != want.get(len(shape)):
            raise ValueError(f"replacement must be a tensor [batch, pos, d_head] = {want[3]}, [pos, d_head] or "
                             f"[d_head]; got {shape if shape is not None else type(replacement).__name__}.")
    ablate = [(f"blocks.{layer}.attn.hook_z", mean_head_hook(head, replacement))]
    ln_name = f"blocks.{reader}.ln1.hook_out"
    z_name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        with model.hooks(fwd_hooks=ablate):
            _, abl = model.run_with_cache(tokens, names_filter=lambda n: n == ln_name)
        _, clean = model.run_with_cache(tokens, names_filter=lambda n: n == z_name)
    ablated_in = abl[ln_name]
    delta = (clean[z_name][:, :, head] - replacement.to(clean[z_name].dtype)) @ model.W_O[layer, head]  # [batch, pos, d]

    def losses(hooks):
        with torch.no_grad():
            nll = per_token_loss(model.run_with_hooks(tokens, fwd_hooks=hooks), tokens)
        first, second = copy_losses(nll, length)
        return (first, second, nll[:, length + 1:].mean(1)) if per_sequence else (first, second)

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


def resampled_path_losses(model, token_sets: Sequence[torch.Tensor], length: int, layer: int, head: int,
                          reader: int | None = None) -> dict:
    """:func:`path_ablation_losses` under resample ablation, pooled over several batches.

    In each batch of ``token_sets`` (each BOS + R + R with |R| = ``length``, at least two
    sequences) every sequence gets the head's output on the previous sequence of the same
    batch. Returns, for every entry, (first-copy loss, second-copy loss, second-copy loss of
    each batch [n_batches]): the means over the batches, and the batches themselves, which
    are the independent repeats a spread is read from (:func:`route_tie`).
    """
    if isinstance(token_sets, torch.Tensor) or not token_sets:
        raise ValueError("token_sets must be a non-empty list of token batches [batch, 1 + 2*length].")
    name = f"blocks.{layer}.attn.hook_z"
    _check_head(model, layer, head)
    runs = []
    for tokens in token_sets:
        if tokens.ndim != 2 or tokens.shape[0] < 2:
            raise ValueError(f"a resample ablation needs at least two sequences per batch; got shape {tuple(tokens.shape)}.")
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
        runs.append(path_ablation_losses(model, tokens, length, layer, head, reader=reader,
                                         replacement=cache[name][:, :, head].roll(1, 0)))
    return {k: (float(np.mean([r[k][0] for r in runs])), float(np.mean([r[k][1] for r in runs])),
                torch.tensor([r[k][1] for r in runs], dtype=torch.float64)) for k in runs[0]}


# ----------------------------------------------------------------- prediction exercises
def solution_layer0_prediction(second_copy: dict, partners: Sequence, self_head: tuple) -> tuple:
    """Reference: the earlier-layer head whose ablation raises the second-copy loss most, from
    ``second_copy`` {(layer, head): loss} measured in the chapter (``partners``, best first,
    and ``self_head`` name the kinds, for the mistakes)."""
    return tuple(max(second_copy, key=second_copy.get))


def _layer0_cases():
    organism_like = {(0, 0): 7.4, (0, 1): 0.6, (0, 2): 0.65, (0, 3): 4.2}
    partners_matter = {(0, 0): 0.5, (0, 1): 1.0, (0, 2): 0.4, (0, 3): 6.0}
    return [((organism_like, [(0, 3), (0, 1), (0, 2)], (0, 0)), {}),
            ((partners_matter, [(0, 3), (0, 1), (0, 2)], (0, 0)), {})]


_BACKUP = ("The other previous-token heads of its layer make up part of its loss, so removing it costs less than "
           "removing a head nothing backs up.")

LAYER0_PREDICTION = Exercise(
    "ch5.layer0-prediction", "predicted_head", solution_layer0_prediction, _layer0_cases,
    mistakes=[
        Mistake(lambda s, p, sh: tuple(p[0]), "you picked the strongest previous-token head, the one with the "
                "highest K-composition into the induction head. " + _BACKUP),
        Mistake(lambda s, p, sh: tuple(p[1]) if len(p) > 1 else None, "you picked a weaker previous-token head. "
                + _BACKUP),
        Mistake(lambda s, p, sh: tuple(min(s, key=s.get)), "that is the head whose ablation costs the *least*; the "
                "question asks which one raises the second-copy loss the most."),
    ],
)


def check_layer0_prediction(predicted_head, second_copy: dict, partners: Sequence, self_head: tuple) -> bool:
    """Exercise: which earlier-layer head's ablation hurts induction most, checked against the
    chapter's measurement ``second_copy`` {(layer, head): second-copy loss}."""
    if isinstance(predicted_head, list):
        predicted_head = tuple(predicted_head)
    return LAYER0_PREDICTION.check_prediction(predicted_head, second_copy, list(partners), tuple(self_head))


class _Tied(str):
    """A route (the costliest to remove) that also carries the routes indistinguishable from it."""

    near: frozenset
    margin: float   # how much more the costliest route costs than the next
    spread: float   # two paired standard errors of that difference (0 without per-sequence losses)


def route_tie(paths: dict, routes: Sequence[str] = PATHS, n_se: float = 2.0) -> "_Tied":
    """The route whose removal costs the second copy most, from :func:`path_ablation_losses`,
    with every route whose paired difference from it (over the sequences) is under ``n_se``
    standard errors: a tie the measurement cannot break. Entries without per-sequence losses
    (plain (first, second) pairs) give a tie of one route."""
    missing = [r for r in routes if r not in paths]
    if missing:
        raise ValueError(f"paths has no entry for {missing}; pass the dict path_ablation_losses returns.")
    top = max(routes, key=lambda r: float(paths[r][1]))
    out = _Tied(top)
    near, spreads = {top}, {}
    for r in routes:
        if r == top or len(paths[r]) < 3 or len(paths[top]) < 3:
            continue
        diff = torch.as_tensor(paths[top][2], dtype=torch.float64) - torch.as_tensor(paths[r][2], dtype=torch.float64)
        spreads[r] = n_se * float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if float(diff.mean()) < spreads[r]:
            near.add(r)
    runner = max((r for r in routes if r != top), key=lambda r: float(paths[r][1]))
    out.near, out.margin = frozenset(near), float(paths[top][1]) - float(paths[runner][1])
    out.spread = spreads.get(runner, 0.0)
    return out


def solution_reading_path(paths: dict) -> str:
    """Reference: the input of the induction layer ("Q", "K", "V" or "direct") through which removing the
    self-attending head hurts the second copy most, from :func:`path_ablation_losses` measured in the chapter,
    with the routes within two paired standard errors of it (:func:`route_tie`), which are accepted too."""
    return route_tie(paths)


def _compare_route(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if not isinstance(got, str) or got not in PATHS:
        raise CheckFailed(f"{what}: give one of {PATHS}, got {got!r}.")
    near = getattr(want, "near", frozenset({str(want)}))   # a listed mistake's answer is one plain route
    if got not in near:
        raise CheckFailed(f"{what}: got {got!r}; the measured costliest route is {str(want)!r}"
                          + (f" (routes within two standard errors of it: {sorted(near)})" if len(near) > 1 else "")
                          + ".")


def _reading_path_cases():
    g = torch.Generator().manual_seed(0)
    def seqs(m, n=16):   # per-sequence second-copy losses with mean m
        x = torch.randn(n, generator=g, dtype=torch.float64) * 0.3
        return x - x.mean() + m
    def case(q, k, v, d):
        return {r: (7.6, m, seqs(m)) for r, m in zip(PATHS, (q, k, v, d))}
    values_first, query_first = case(2.6, 0.07, 6.5, 0.02), case(6.5, 0.07, 2.6, 0.02)
    return [((values_first,), {}), ((query_first,), {})]


def _unless_tied(route: str, other: str):
    """A wrong answer ``route`` given where ``other`` is measurably the costliest route (else the right one)."""
    def answer(paths):
        t = route_tie(paths)
        return route if str(t) == other and route not in t.near else str(t)
    return answer


_PATH_MISTAKES = {   # a wrong route, and the misconception behind it
    "K": "K-composition is how the induction head reads the *previous* token at a key position, and the "
         "previous-token heads write that. A head that attends to its own token writes the *current* token at its "
         "own position: that is what a query ('find a key whose previous token is mine') or a value (the token to "
         "copy) needs, not a key.",
    "direct": "a layer-0 head's direct write to the logits is a bigram-like guess; induction on random tokens needs "
              "the layer-1 head to read it.",
}
READING_PATH = Exercise(
    "ch5.reading-path", "predicted_path", solution_reading_path, _reading_path_cases,
    mistakes=[Mistake(lambda paths, a=a: a, why) for a, why in _PATH_MISTAKES.items()] + [
        Mistake(_unless_tied("Q", "V"), "the query does need the current token to search for, but here removing "
                "the head from the values costs more, beyond the spread: the induction head copies what its values "
                "read at the position it attends to, and the self-attending head re-writes that position's token "
                "where the values read it."),
        Mistake(_unless_tied("V", "Q"), "the values do carry the token to copy, but here removing the head from "
                "the queries costs more, beyond the spread: without the current token in its query the induction "
                "head does not find the right key.")],
    compare=_compare_route,
)


def check_reading_path(answer, paths: dict | None) -> bool:
    """Exercise: predict through which input the self-attending head is read, checked against
    ``paths`` (:func:`path_ablation_losses` of that head with ``per_sequence=True``, measured in the
    chapter; None where the model has no path hooks). Any route within two paired standard errors
    of the costliest is accepted, and the checker says when the answer was accepted as part of a tie."""
    if paths is None:
        print("predicted_path: this model has no separate query/key/value hooks, so there is no measurement "
              "to check against.")
        return False
    if isinstance(answer, str):
        answer = answer.strip().upper() if answer.strip().lower() != "direct" else "direct"
    ok = READING_PATH.check_prediction(answer, paths)
    tie = route_tie(paths)
    if ok and len(tie.near) > 1:
        print(f"  The measurement cannot separate {' and '.join(sorted(tie.near))}: {str(tie)} costs "
              f"{tie.margin:.2f} nats more than the next route, within two standard errors "
              f"({tie.spread:.2f}), so any of them is accepted.")
    return ok
