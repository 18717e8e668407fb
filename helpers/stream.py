"""The residual stream as the object (Chapter 1).

Tools for taking a forward pass apart into the writes that built it: the
stream states at every depth, the split of the final stream into embedding,
positional embedding, every attention head, every attention-output bias and
every MLP, hooks that silence whole blocks, term and parameter counts, the
decomposition explorer (static plotly and live ipywidgets), and the checkers
for the chapter's exercises.
"""
from __future__ import annotations

import hashlib
import json
import weakref
from typing import Sequence

import numpy as np

from .core import decompose_stream, require_cache_key, require_int, stream_states, zero_block_hooks
from .exercises import Exercise, Mistake

__all__ = [
    "stream_states",
    "decompose_stream",
    "zero_block_hooks",
    "count_additive_terms",
    "writing_params",
    "decomposition_explorer",
    "decomposition_widget",
    "sublayer_sources",
    "output_bias_shares",
    "silenced_window_losses",
    "silencing_cost_windows",
    "silencing_costs",
    "joint_gap_windows",
    "gap_direction",
    "near_least",
    "check_count_additive_terms",
    "check_rotary_terms",
    "INTERFERENCE_BANDS",
    "interference_ratio_windows",
    "interference_band",
    "check_interference_ratio",
    "check_interference_prediction",
    "check_joint_cost",
    "check_joint_prediction",
    "check_least_prediction",
    "check_least_needed_block",
]


def count_additive_terms(n_layers: int, n_heads: int, separate_biases: bool = False, attn_only: bool = False) -> int:
    """Number of vectors that add up to the final stream at one position.

    Counted: the token embedding, the positional embedding, one write per head per
    layer, and one MLP write per layer (none if ``attn_only``). With
    ``separate_biases`` the attention output bias of each layer, which belongs to
    no single head, counts as a term of its own. Not counted: LayerNorm (it
    rescales what a sub-layer reads, it writes nothing) and the unembedding.
    """
    require_int("n_layers", n_layers)
    require_int("n_heads", n_heads)
    per_layer = n_heads + (0 if attn_only else 1) + (1 if separate_biases else 0)
    return 2 + n_layers * per_layer


def writing_params(d_model: int, n_heads: int, d_head: int, d_mlp: int) -> dict:
    """Parameters per block whose output lands in the stream: W_O and W_out."""
    for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_head", d_head), ("d_mlp", d_mlp)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    w_o = n_heads * d_head * d_model
    w_out = d_mlp * d_model
    return {"W_O": w_o, "W_out": w_out, "total": w_o + w_out, "mlp_to_stream_ratio": d_mlp / d_model}


def output_bias_shares(raw_model):
    """Where the attention output bias b_O of compatibility mode comes from, per block.

    ``raw_model`` is the bridge loaded with ``compatibility=False`` (weights as
    trained). Compatibility mode folds each head's value bias into b_O (a value
    bias adds the same vector to every value, and attention weights sum to 1, so
    the head writes ``b_V^h W_O^h`` whatever it attends to), after first folding
    LayerNorm's β into b_V (``b_V ← b_V + β W_V``), and then centres every writing
    weight (subtracts its mean over the d_model coordinates). Returns a dict of
    tensors: ``own`` [L, d] (the trained b_O, centred) and ``heads`` [L, H, d]
    (each head's carried value bias, centred); ``own + heads.sum(1)`` is the
    folded b_O.
    """
    import torch

    cfg = getattr(raw_model, "cfg", None)
    if cfg is None or not hasattr(raw_model, "W_V") or not hasattr(raw_model, "blocks"):
        raise TypeError("output_bias_shares needs a model from helpers.load_model(name, compatibility=False).")
    own, heads = [], []
    with torch.no_grad():
        for l in range(int(cfg.n_layers)):
            beta = _ln1_bias(raw_model, l)
            b_v = raw_model.b_V[l] + torch.einsum("d,hdk->hk", beta, raw_model.W_V[l])  # [H, d_head]
            share = torch.einsum("hk,hkd->hd", b_v, raw_model.W_O[l])                   # [H, d]
            heads.append(share - share.mean(-1, keepdim=True))
            b_o = raw_model.b_O[l]
            own.append(b_o - b_o.mean())
    return {"own": torch.stack(own), "heads": torch.stack(heads)}


def _ln1_bias(raw_model, layer: int):
    ln = raw_model.blocks[layer].ln1
    for name, p in ln.named_parameters():
        if name.split(".")[-1] in ("bias", "b"):
            return p
    raise ValueError(f"block {layer}'s first LayerNorm has no bias parameter; was the model loaded "
                     "with compatibility=False?")


# Silencing sweeps are the chapter's most expensive computation, and its checkers ask for the same
# losses again and again (reference, listed mistakes, the reader's prediction). They are kept per model
# (weakly, so a dropped model frees them) and keyed by what determines the result: the token tensor's
# content, the set of silenced blocks, and the identity and in-place version of every weight. A call made
# while other hooks are attached (inside someone's ``model.hooks``) is computed afresh and not kept.
_LOSS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _loss_key(model, tokens, blocks: tuple) -> tuple:
    t = tokens.detach().cpu().contiguous()
    content = hashlib.sha1(t.numpy().tobytes()).hexdigest()
    weights = tuple((p.data_ptr(), p._version) for p in model.parameters())
    return (tuple(t.shape), str(t.dtype), content, blocks, weights)


def _hooks_attached(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def silenced_window_losses(model, tokens, blocks: Sequence[int] = ()):
    """Mean next-token loss of each sequence in ``tokens`` [batch, pos], with ``blocks`` silenced together.

    Silencing replaces a block's attention and MLP writes by zeros (:func:`zero_block_hooks`), so the
    block is the identity on the stream; ``blocks=()`` gives the unsilenced losses. Returns a float
    tensor [batch]. Results are cached per model, token content, blocks and weights (see above).
    """
    import torch

    from .core import require_tokens

    L = int(model.cfg.n_layers)
    tokens = require_tokens(model, tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [batch, pos] with pos >= 2, got shape {tuple(tokens.shape)}.")
    blocks = tuple(sorted({require_int("block", b, 0, L - 1) for b in blocks}))
    def forward():
        with torch.no_grad(), model.hooks(fwd_hooks=zero_block_hooks(list(blocks), L) if blocks else []):
            nll = model(tokens, return_type="loss", loss_per_token=True)          # [batch, pos - 1]
        return nll.float().mean(-1).cpu()

    if _hooks_attached(model):  # someone else's hooks change the result: compute, do not keep
        return forward()
    store = _LOSS_CACHE.setdefault(model, {})
    key = _loss_key(model, tokens, blocks)
    if key not in store:
        store[key] = forward()
    return store[key].clone()


def silencing_cost_windows(model, tokens, blocks: Sequence[int] | None = None):
    """Per-sequence loss increase when each block is silenced alone: a tensor [n_blocks, batch]."""
    import torch

    L = int(model.cfg.n_layers)
    blocks = list(range(L)) if blocks is None else list(blocks)
    base = silenced_window_losses(model, tokens)
    return torch.stack([silenced_window_losses(model, tokens, [b]) - base for b in blocks])


def silencing_costs(model, tokens, blocks: Sequence[int] | None = None) -> list[float]:
    """Increase in mean next-token loss on ``tokens`` when each block is replaced by the identity.

    ``blocks`` lists the blocks to silence one at a time (default: every block). The sequences in
    ``tokens`` have one length, so the mean of their per-sequence losses is the loss over all tokens.
    """
    return silencing_cost_windows(model, tokens, blocks).mean(-1).tolist()


# ---------------------------------------------------------------- explorer

_EXPLORER_JS = """
(function() {
  var gd = document.getElementById('{plot_id}');
  var data = %s;
  var state = {row: data.start[0], col: data.start[1], mode: 'raw'};
  var baseAnnotations = (gd.layout.annotations || []).slice();
  function rawVector(row, col) {
    var v = data.dims.map(function() { return 0; });
    for (var k = 0; k < row + 2; k++) {
      for (var i = 0; i < v.length; i++) { v[i] += data.sources[k][col][i]; }
    }
    return v;
  }
  function draw() {
    var title = data.rows[state.row] + ', position ' + state.col + ' (' + data.cols[state.col] + ')';
    var traces = [];
    if (state.mode === 'raw') {
      var vec = rawVector(state.row, state.col);
      traces.push({type: 'bar', x: data.dims, y: vec, name: 'stream', xaxis: 'x2', yaxis: 'y2',
                   marker: {color: vec.map(function(v) { return v >= 0 ? '#0072B2' : '#D55E00'; })},
                   hovertemplate: 'dim %%{x}: %%{y:.3f}<extra></extra>'});
    } else {
      for (var k = 0; k < state.row + 2; k++) {
        traces.push({type: 'bar', x: data.dims, y: data.sources[k][state.col], name: data.labels[k],
                     xaxis: 'x2', yaxis: 'y2', marker: {color: data.colors[k]},
                     hovertemplate: data.labels[k] + ', dim %%{x}: %%{y:.3f}<extra></extra>'});
      }
    }
    Plotly.react(gd, [gd.data[0]].concat(traces), Object.assign({}, gd.layout, {
      barmode: 'relative',
      annotations: baseAnnotations.concat([{text: title,
                     xref: 'paper', yref: 'paper', x: 0.0, y: data.barTitleY, xanchor: 'left', yanchor: 'bottom',
                     showarrow: false, font: {size: 13}}])
    }));
  }
  gd.on('plotly_click', function(ev) {
    var pt = ev.points[0];
    if (pt.data.type !== 'heatmap') return;
    state.row = pt.pointIndex[0]; state.col = pt.pointIndex[1]; draw();
  });
  gd.on('plotly_buttonclicked', function(ev) {
    state.mode = ev.button.label.indexOf('raw') === 0 ? 'raw' : 'split'; draw();
  });
  draw();
})();
"""


def _state_labels(source_labels):
    return ["h0 = embed + pos"] + [f"after {lab}" for lab in source_labels[2:]]


def decomposition_explorer(sources, source_labels, token_labels, start=None):
    """Static explorer: a grid of stream states; click a cell to see its vector.

    ``sources``: [n_sources, pos, d] — the writes in the order the model makes
    them: token embedding, positional embedding, then one entry per sub-layer
    (attention 1, MLP 1, attention 2, …). Row ``r`` of the grid is the stream
    after the first ``r + 2`` sources, so the first row is h_0 and the last the
    final stream. Returns ``(figure, post_script)`` for :func:`helpers.show`:
    clicking a heatmap cell selects a state; the buttons switch the bar chart
    between the raw vector and the sources that sum to it. Needs no kernel.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .plotting import PALETTE

    sources = np.asarray(sources, dtype=float)
    if sources.ndim != 3 or sources.shape[0] < 2:
        raise ValueError(f"sources must be [n_sources >= 2, pos, d_model], got shape {sources.shape}.")
    n_src, n_pos, d = sources.shape
    if len(source_labels) != n_src or len(token_labels) != n_pos:
        raise ValueError(f"Need {n_src} source labels and {n_pos} token labels; got "
                         f"{len(source_labels)} and {len(token_labels)}.")
    states = np.cumsum(sources, axis=0)[1:]  # row r = sum of the first r + 2 sources
    rows = _state_labels(list(source_labels))
    start = start or (len(rows) - 1, n_pos - 1)
    norms = np.linalg.norm(states, axis=-1)
    cols = [f"{i}:{t}" for i, t in enumerate(token_labels)]
    fig = make_subplots(rows=2, cols=1, row_heights=[0.42, 0.58], vertical_spacing=0.2,
                        subplot_titles=("Length of each state, log colour (click a cell)", ""))
    # one long state (often the first position's) would wash the rest out: colour by log10 of the length
    log_norms = np.log10(np.maximum(norms, 1e-6))
    lo, hi = float(np.floor(log_norms.min())), float(np.ceil(log_norms.max()))
    ticks = np.arange(lo, hi + 1)
    fig.add_trace(go.Heatmap(
        z=np.round(log_norms, 4), x=cols, y=rows, colorscale="Blues", customdata=np.round(norms, 3),
        colorbar={"title": {"text": "‖h‖", "side": "top"}, "tickvals": ticks.tolist(),
                  "ticktext": [f"{10 ** t:g}" for t in ticks], "len": 0.34, "y": 1.0, "yanchor": "top",
                  "thickness": 12},
        hovertemplate="%{y}, %{x}<br>norm %{customdata:.2f}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(tickangle=-40, row=1, col=1)
    fig.update_xaxes(title_text="stream dimension", row=2, col=1)
    fig.update_yaxes(title_text="value", row=2, col=1)
    fig.update_layout(
        height=820, showlegend=True, legend={"orientation": "h", "y": -0.1},
        title={"text": "Every state of the stream is the sum of the writes before it", "y": 0.99},
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0.0, "y": 0.505, "xanchor": "left",
                      "yanchor": "bottom", "active": 0,
                      "buttons": [{"label": "raw vector", "method": "skip", "args": []},
                                  {"label": "split by source", "method": "skip", "args": []}]}],
        margin={"t": 90, "l": 140},
        meta={"view": "raw vector"},
    )
    payload = {
        "rows": rows, "cols": [str(t) for t in token_labels], "dims": list(range(d)),
        "sources": np.round(sources, 3).tolist(), "labels": list(source_labels),
        "colors": [PALETTE[i % len(PALETTE)] for i in range(n_src)], "start": list(start),
        "barTitleY": 0.466,
    }
    return fig, _EXPLORER_JS % json.dumps(payload, separators=(",", ":"))


def decomposition_widget(sources, source_labels, token_labels):
    """The same explorer as live ipywidgets (needs a kernel: Colab, Jupyter)."""
    import ipywidgets as widgets
    import plotly.graph_objects as go

    sources = np.asarray(sources, dtype=float)
    rows = _state_labels(list(source_labels))
    row = widgets.Dropdown(options=[(s, i) for i, s in enumerate(rows)], value=len(rows) - 1, description="state")
    pos = widgets.Dropdown(options=[(f"{i}: {t}", i) for i, t in enumerate(token_labels)],
                           value=len(token_labels) - 1, description="position")
    mode = widgets.ToggleButtons(options=["raw", "split by source"], description="view")
    fig = go.FigureWidget()
    fig.update_layout(height=420, barmode="relative", xaxis_title="stream dimension", yaxis_title="value")

    def redraw(*_):
        r, p = row.value, pos.value
        with fig.batch_update():
            fig.data = []
            if mode.value == "raw":
                fig.add_bar(y=sources[: r + 2, p].sum(0), name="stream")
            else:
                for k in range(r + 2):
                    fig.add_bar(y=sources[k, p], name=source_labels[k])
            fig.layout.title = f"{rows[r]}, position {p} ({token_labels[p]})"

    for w in (row, pos, mode):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([row, pos]), mode, fig])


def sublayer_sources(cache, n_layers: int):
    """The writes in model order for one example: [2 + 2L, pos, d] and labels."""
    import torch

    keys, labels = ["hook_embed", "hook_pos_embed"], ["embed", "pos"]
    for l in range(n_layers):
        keys += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"]
        labels += [f"attn {l + 1}", f"MLP {l + 1}"]
    for key in keys:
        require_cache_key(cache, key)
    return torch.stack([cache[k][0] for k in keys]), labels


# ---------------------------------------------------------------- exercises

def solution_count_terms(n_layers: int, n_heads: int) -> int:
    """Reference for the count-terms exercise: 2 embeddings + n_layers × (n_heads + 1 MLP)."""
    return count_additive_terms(n_layers, n_heads)


COUNT_TERMS = Exercise(
    "ch1.count-terms", "count_terms", solution_count_terms, [((1, 1), {}), ((2, 4), {}), ((4, 3), {}), ((12, 12), {}), ((24, 16), {}), ((32, 32), {})],
    mistakes=[
        Mistake(lambda L, H: 2 + L * H, "you counted the embeddings and the heads but not the MLPs. "
                "Every block also adds one MLP write."),
        Mistake(lambda L, H: L * (H + 1), "the token and positional embeddings are terms of the sum too "
                "(they are h_0)."),
        Mistake(lambda L, H: 2 + L * (H + 2), "you counted each layer's attention bias as a term of its own. "
                "This exercise folds it into its layer, as the formula does."),
        Mistake(lambda L, H: (H + 2) ** L, "that counts paths through the network, not the terms added into "
                "the final stream (Chapter 2 counts paths)."),
    ],
)


def check_count_additive_terms(fn) -> bool:
    """Exercise: terms in the final stream (embed, pos, every head, every MLP)."""
    return COUNT_TERMS.check(fn)


def _default_run():
    """The chapter's model and two texts (held-out corpus text, repeated random tokens), built once."""
    global _DEFAULT_RUN
    if _DEFAULT_RUN is None:
        from .core import repeated_random_tokens
        from .models import load_model
        from .zoo.evals import corpus_windows

        model = load_model("rs-gpt2-4l")
        _DEFAULT_RUN = model, corpus_windows(model, n_seqs=8, seq_len=97, seed=123), \
            repeated_random_tokens(model, n_seqs=8, length=40, seed=1)
    return _DEFAULT_RUN


_DEFAULT_RUN = None


def solution_rotary_terms() -> int:
    """Reference: vectors summed into the final stream of a 32-layer, 32-head mixture-of-experts model with
    rotary positions, two of eight experts running per token (each expert's output counted as its own term)."""
    return 1 + 32 * (32 + 2)


ROTARY_TERMS = Exercise("ch1.rotary-terms", "terms_rotary", solution_rotary_terms)
check_rotary_terms = ROTARY_TERMS.check_value


# ------------------------------------------------------------------------- exercise: do the writes interfere?
INTERFERENCE_BANDS = ("below 0.8", "0.8 to 1.25", "above 1.25")


def interference_ratio_windows(model, tokens):
    """Per sequence, the mean over positions of ‖Σ_i w_i‖² / Σ_i ‖w_i‖² for the writes w_i of the final
    stream (:func:`decompose_stream`): 1 when the writes are mutually orthogonal, below 1 when they
    partly cancel, above 1 when they point the same way. Returns a tensor [batch]."""
    import torch

    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        parts, _ = decompose_stream(model, cache)                       # [n_parts, batch, pos, d]
        ratio = parts.sum(0).pow(2).sum(-1) / parts.pow(2).sum(-1).sum(0)  # [batch, pos]
    return ratio.mean(-1)


def solution_interference_ratio(model, tokens) -> float:
    """Reference: ‖Σ w‖² / Σ ‖w‖² over the final stream's writes, averaged over sequences and positions."""
    return float(interference_ratio_windows(model, tokens).mean())


def interference_band(ratio: float) -> str:
    """The band of INTERFERENCE_BANDS a ratio falls in: a factor of 1.25 either side of 1 counts as 'about 1'."""
    ratio = float(ratio)
    return INTERFERENCE_BANDS[0] if ratio < 0.8 else INTERFERENCE_BANDS[2] if ratio > 1.25 else INTERFERENCE_BANDS[1]


def _interference_cases(model=None, texts=None):
    if model is None:
        model, *texts = _default_run()
    return [((model, t), {}) for t in texts]


def _norm_ratio(model, tokens) -> float:
    import torch

    with torch.no_grad():
        parts, _ = decompose_stream(model, model.run_with_cache(tokens)[1])
    return float((parts.sum(0).norm(dim=-1) / parts.norm(dim=-1).sum(0)).mean())


def _blocks_only_ratio(model, tokens) -> float:
    import torch

    with torch.no_grad():
        parts, labels = decompose_stream(model, model.run_with_cache(tokens)[1])
    blocks = parts[[i for i, lab in enumerate(labels) if lab not in ("embed", "pos_embed")]]
    return float((blocks.sum(0).pow(2).sum(-1) / blocks.pow(2).sum(-1).sum(0)).mean())


INTERFERENCE = Exercise(
    "ch1.interference", "interference_ratio", solution_interference_ratio, _interference_cases,
    mistakes=[
        Mistake(_norm_ratio, "you divided norms, not squared norms. ‖Σw‖ / Σ‖w‖ is at most 1 for any vectors (the "
                "triangle inequality), so it cannot tell cancelling writes from orthogonal ones; with squared norms, "
                "orthogonal writes give exactly 1 (Pythagoras)."),
        Mistake(_blocks_only_ratio, "you left out the token and positional embeddings: they are writes too, the "
                "first two terms of the sum."),
    ],
    atol=1e-4,
)


def check_interference_ratio(fn, model=None, texts=None) -> bool:
    """Exercise: ‖Σ w‖² / Σ ‖w‖² over the final stream's writes, mean over sequences and positions.
    With ``model``, pass ``texts`` too (a list of token tensors); without, the bundled model's own cases."""
    if model is not None and not texts:
        raise ValueError("pass the texts to try the function on with the model, e.g. [text_tokens, rep_tokens].")
    return INTERFERENCE.check(fn, None if model is None else _interference_cases(model, texts))


def _interference_prediction_cases():
    """The chapter's measurement on held-out text, then two outcomes another model could give."""
    model, text, _ = _default_run()
    return [((solution_interference_ratio(model, text),), {}), ((0.6,), {}), ((1.5,), {})]


INTERFERENCE_PREDICTION = Exercise(
    "ch1.predict-interference", "predicted_band", interference_band, _interference_prediction_cases,
    mistakes=[
        Mistake(lambda ratio: INTERFERENCE_BANDS[0], "you expected the writes to cancel. Some pairs do point "
                "against each other, but measured, the cross terms ⟨w_i, w_j⟩ are small and of both signs, so "
                "they cancel each other more than they cancel the writes."),
        Mistake(lambda ratio: INTERFERENCE_BANDS[2], "you expected every block to push the stream further the "
                "same way. Measured, the cross terms ⟨w_i, w_j⟩ mostly cancel each other: the squared norm of "
                "the sum is close to the sum of the squared norms."),
    ],
    choices=INTERFERENCE_BANDS,
)


def check_interference_prediction(predicted_band, measured_ratio) -> bool:
    """Exercise: a predicted band (one of INTERFERENCE_BANDS) against the ratio measured in the chapter."""
    if _unfilled("predicted_band", predicted_band):
        return False
    return INTERFERENCE_PREDICTION.check_prediction(predicted_band, float(measured_ratio))


def solution_joint_cost(model, tokens, a: int, b: int) -> float:
    """Reference: loss increase with blocks a and b silenced together, minus the sum of the single increases."""
    return float(joint_gap_windows(model, tokens, {"pair": (a, b)})["pair"].mean())


def joint_gap_windows(model, tokens, pairs: dict | None = None) -> dict:
    """Per-sequence gap (joint cost minus the sum of the single costs) for each named pair of blocks.

    ``pairs`` maps a label to ``(a, b)``, blocks counted from 0; the default is the exercise's two pairs,
    ``"blocks 1+2"`` (blocks.0 and blocks.1) and ``"last two"``. Returns ``{label: tensor [batch]}``.
    """
    L = int(model.cfg.n_layers)
    pairs = _default_pairs(L) if pairs is None else pairs
    base = silenced_window_losses(model, tokens)
    out = {}
    for label, (a, b) in pairs.items():
        if a == b:
            raise ValueError(f"pair {label!r}: silence two different blocks, got {a} twice.")
        cost = {blocks: silenced_window_losses(model, tokens, blocks) - base for blocks in ((a,), (b,), (a, b))}
        out[label] = cost[(a, b)] - (cost[(a,)] + cost[(b,)])
    return out


def _default_pairs(L: int) -> dict:
    return {"blocks 1+2": (0, 1), "last two": (L - 2, L - 1)}


def _joint_cost_cases(model=None, texts=None):
    if model is None:
        model, *texts = _default_run()
    return [((model, t, a, b), {}) for t in texts for a, b in _default_pairs(int(model.cfg.n_layers)).values()]


def _joint_without_base(model, tokens, a, b):
    base = float(silenced_window_losses(model, tokens).mean())
    single_a, single_b = silencing_costs(model, tokens, [a, b])
    both = float(silenced_window_losses(model, tokens, [a, b]).mean())
    return both - (single_a + base + single_b + base)


JOINT_COST = Exercise(
    "ch1.joint-cost", "joint_cost", solution_joint_cost, _joint_cost_cases,
    mistakes=[
        Mistake(lambda m, t, a, b: 0.0, "you assumed effects add because writes add. They need not: block b computes "
                "its write from what block a left behind, and the loss is a nonlinear function of the final stream "
                "(final LayerNorm, softmax)."),
        Mistake(lambda m, t, a, b: -solution_joint_cost(m, t, a, b), "the sign is flipped: the answer is the joint "
                "cost minus the sum of the single costs."),
        Mistake(_joint_without_base, "you subtracted raw losses, not increases: each cost is a loss minus the "
                "unsilenced loss, so the base loss must come off each term once."),
    ],
    atol=1e-3,
    rtol=1e-3,
)

GAP_WORDS = ("more", "less", "same")


def gap_direction(gaps) -> str:
    """'more' or 'less' if the mean per-sequence gap is at least 3 standard errors from 0, else 'same'."""
    import torch

    gaps = torch.as_tensor(gaps, dtype=torch.float64).flatten()
    if gaps.numel() < 2:
        raise ValueError("need the gap on at least two sequences to estimate its standard error.")
    mean, se = float(gaps.mean()), float(gaps.std() / gaps.numel() ** 0.5)
    return "same" if abs(mean) < 3 * se else ("more" if mean > 0 else "less")


def _unfilled(name: str, prediction, keys=None) -> bool:
    """True (after a reminder) while a prediction, or any entry of a dict of predictions, is still ``...``."""
    from .exercises import _remind

    values = prediction.values() if isinstance(prediction, dict) else [prediction]
    if any(v is Ellipsis for v in values):
        _remind(name, value=True)
        return True
    return False


def _compare_gap_words(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if not isinstance(got, dict) or set(got) != set(want):
        raise CheckFailed(f"{what}: give a dict with the keys {sorted(want)}, got {got!r}.")
    for key in want:
        if got[key] not in GAP_WORDS:
            raise CheckFailed(f"{what}[{key!r}]: answer one of {GAP_WORDS}, got {got[key]!r}.")
    wrong = [k for k in want if got[k] != want[k]]
    if wrong:
        raise CheckFailed(f"{what}: " + "; ".join(f"for {k} you predicted {got[k]!r}, the measurement says "
                                                   f"{want[k]!r}" for k in wrong) + ".")


def _joint_prediction_cases():
    """The chapter's measurement on held-out text, then two outcomes another model could give (so a
    prediction that ignores the measurement is caught)."""
    import torch

    model, text, _ = _default_run()
    wobble = torch.tensor([0.1, -0.1] * 4)
    return [((joint_gap_windows(model, text),), {}),
            (({"blocks 1+2": 1.0 + wobble, "last two": wobble},), {}),
            (({"blocks 1+2": wobble, "last two": -1.0 + wobble},), {})]


JOINT_PREDICTION = Exercise(
    "ch1.predict-joint", "predicted_gap", lambda measured: {k: gap_direction(v) for k, v in measured.items()},
    lambda: _joint_prediction_cases(),
    mistakes=[
        Mistake(lambda measured: {k: "same" for k in measured}, "you assumed the effects add because the writes add. "
                "Later blocks compute their writes from what earlier ones left, and the loss is a nonlinear "
                "function of the final stream, so the costs of two silenced blocks need not add."),
        Mistake(lambda measured: {k: "more" for k in measured}, "you generalised from the one pair in §6. The gap "
                "can have either sign: a block's write can hurt once an earlier block is gone."),
    ],
    compare=_compare_gap_words,
)


def check_joint_prediction(predicted_gap, measured) -> bool:
    """Exercise: predicted directions ('more', 'less', 'same') of the joint-minus-sum gap, against the
    per-sequence gaps ``measured`` ({label: tensor [batch]}); 'same' means within 3 standard errors of 0."""
    if _unfilled("predicted_gap", predicted_gap):
        return False
    return JOINT_PREDICTION.check_prediction(predicted_gap, measured)


def check_joint_cost(fn, model, texts, predicted_gap=None, pairs=None) -> bool:
    """Exercise (predict, then measure): is silencing two blocks the sum of silencing each?

    With ``predicted_gap`` ({"blocks 1+2": ..., "last two": ...}), the prediction must be filled in
    before the function is checked, and is then checked against the measurement on ``texts[0]``.
    """
    L = int(model.cfg.n_layers)
    if predicted_gap is not None and _unfilled("predicted_gap", predicted_gap):
        return False
    pairs = pairs or list(_default_pairs(L).values())
    if not JOINT_COST.check(fn, [((model, t, a, b), {}) for t in texts for a, b in pairs]):
        return False
    if predicted_gap is None:
        return True
    return check_joint_prediction(predicted_gap, joint_gap_windows(model, texts[0]))


class _Near(int):
    """A block index (the cheapest to silence) that also carries the blocks indistinguishable from it."""

    near: frozenset


def near_least(cost_windows) -> "_Near":
    """The block whose silencing costs least, with every block whose paired cost difference from it is
    under two standard errors over the sequences (``cost_windows``: [n_blocks, batch])."""
    import torch

    cw = torch.as_tensor(cost_windows, dtype=torch.float64)
    if cw.ndim != 2 or cw.shape[1] < 2:
        raise ValueError(f"cost_windows must be [n_blocks, batch >= 2], got shape {tuple(cw.shape)}.")
    best = int(cw.mean(-1).argmin())
    diff = cw - cw[best]                                                   # paired over the sequences
    se = diff.std(-1) / cw.shape[1] ** 0.5
    out = _Near(best)
    out.near = frozenset(int(l) for l in range(cw.shape[0]) if l == best or diff[l].mean() < 2 * se[l])
    return out


def _compare_near(got, want, what: str) -> None:
    from .exercises import CheckFailed

    if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
        raise CheckFailed(f"{what}: give a block index (an int, counted from 0), got {got!r}.")
    near = getattr(want, "near", frozenset({int(want)}))  # a listed mistake's answer is one plain block
    if int(got) not in near:
        blocks = ", ".join(str(b) for b in sorted(near))
        raise CheckFailed(f"{what}: got block {int(got)}; the cheapest block to silence here is {int(want)}, "
                          f"and the blocks within two standard errors of it are {{{blocks}}}.")


def solution_least_needed_block(model, tokens) -> int:
    """Reference: the block (0-based) whose silencing raises the loss on ``tokens`` least (with the blocks
    within two standard errors of it, which are accepted too)."""
    return near_least(silencing_cost_windows(model, tokens))


def _least_needed_cases(model=None, texts=None):
    if model is None:
        model, *texts = _default_run()
    return [((model, t), {}) for t in texts]


def _most_needed(model, tokens) -> int:
    return int(silencing_cost_windows(model, tokens).mean(-1).argmax())


LEAST_NEEDED = Exercise(
    "ch1.least-needed", "least_needed_block", solution_least_needed_block, _least_needed_cases,
    mistakes=[
        Mistake(_most_needed, "that is the block the model needs MOST (the largest loss increase); the question "
                "asks for the least."),
        Mistake(lambda m, t: int(silencing_cost_windows(m, t).mean(-1).argmin()) + 1,
                "the answer is 1 too high: return the block's index counted from 0, as in hook names."),
    ],
    compare=_compare_near,
)


def check_least_needed_block(fn, model, texts, predicted_least=None) -> bool:
    """Exercise (predict, then design): the block a model can most easily do without, on each text.

    With ``predicted_least`` (a block index from 0, predicted for the last text, repeated random tokens),
    the prediction must be filled in first and is checked after the function passes.
    """
    if predicted_least is not None and _unfilled("predicted_least", predicted_least):
        return False
    if not LEAST_NEEDED.check(fn, [((model, t), {}) for t in texts]):
        return False
    if predicted_least is None:
        return True
    return check_least_prediction(predicted_least, silencing_cost_windows(model, texts[-1]),
                                  silencing_cost_windows(model, texts[0]))


def _least_prediction_cases():
    """The chapter's measurement (repeated random tokens, held-out text), then an outcome another model
    could give: every block costly but the first."""
    import torch

    model, text, repeated = _default_run()
    on_repeated, on_text = silencing_cost_windows(model, repeated), silencing_cost_windows(model, text)
    other = torch.ones_like(on_repeated) + torch.tensor([0.01, -0.01] * (on_repeated.shape[1] // 2)
                                                        + [0.0] * (on_repeated.shape[1] % 2))
    other[0] -= 0.9
    return [((on_repeated, on_text), {}), ((other, other.flip(0)), {})]


LEAST_PREDICTION = Exercise(
    "ch1.predict-least", "predicted_least", lambda on_repeated, on_text: near_least(on_repeated),
    lambda: _least_prediction_cases(),
    mistakes=[
        Mistake(lambda on_repeated, on_text: int(on_text.mean(-1).argmin()), "that is the cheapest block on the "
                "held-out text of §6. On repeated random tokens the only useful skill is copying the first half, "
                "and the blocks that do the copying are not spare."),
        Mistake(lambda on_repeated, on_text: int(on_repeated.mean(-1).argmax()), "that block is the one whose "
                "silencing costs the MOST on repeated random tokens: copying a random sequence depends on it."),
    ],
    compare=_compare_near,
)


def check_least_prediction(predicted_least, on_repeated, on_text) -> bool:
    """Exercise: a predicted cheapest block on repeated random tokens, against the measured per-sequence
    costs ``on_repeated`` [n_blocks, batch] (``on_text``: the same on held-out text, to name a mistake)."""
    if _unfilled("predicted_least", predicted_least):
        return False
    return LEAST_PREDICTION.check_prediction(predicted_least, on_repeated, on_text)
