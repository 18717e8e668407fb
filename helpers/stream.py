"""The residual stream as the object (Chapter 1).

Tools for taking a forward pass apart into the writes that built it: the
stream states at every depth, the split of the final stream into embedding,
positional embedding, every attention head, every attention-output bias and
every MLP, hooks that silence whole blocks, term and parameter counts, the
decomposition explorer (static plotly and live ipywidgets), and the checkers
for the chapter's exercises.
"""
from __future__ import annotations

import json
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
    "check_count_additive_terms",
    "check_block_delta",
    "check_head_write",
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
      annotations: baseAnnotations.concat([{text: title + (state.mode === 'raw' ? ': raw vector' : ': split by source'),
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
                        subplot_titles=("Length of each stream state (rows) at each position (columns): click a cell", ""))
    fig.add_trace(go.Heatmap(z=np.round(norms, 3), x=cols, y=rows, colorscale="Blues", showscale=False,
                             hovertemplate="%{y}, %{x}<br>norm %{z:.2f}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(tickangle=-40, row=1, col=1)
    fig.update_xaxes(title_text="stream dimension", row=2, col=1)
    fig.update_yaxes(title_text="value", row=2, col=1)
    fig.update_layout(
        height=820, showlegend=True, legend={"orientation": "h", "y": -0.1},
        title={"text": "Every state of the stream is the sum of the writes before it", "y": 0.99},
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0.0, "y": 0.505, "xanchor": "left",
                      "yanchor": "bottom", "buttons": [{"label": "raw vector", "method": "skip", "args": []},
                                                       {"label": "split by source", "method": "skip", "args": []}]}],
        margin={"t": 90, "l": 140},
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


COUNT_TERMS = Exercise("ch1.count-terms", "count_terms", solution_count_terms,
    [((1, 1), {}), ((2, 4), {}), ((4, 3), {}), ((12, 12), {}), ((24, 16), {}), ((32, 32), {})], mistakes=[
        Mistake(lambda L, H: 2 + L * H, "you counted the embeddings and the heads but not the MLPs. "
                "Every block also adds one MLP write."),
        Mistake(lambda L, H: L * (H + 1), "the token and positional embeddings are terms of the sum too "
                "(they are h_0)."),
        Mistake(lambda L, H: 2 + L * (H + 2), "you counted each layer's attention bias as a term of its own. "
                "This exercise folds it into its layer, as the formula does."),
        Mistake(lambda L, H: (H + 2) ** L, "that counts paths through the network, not the terms added into "
                "the final stream (Chapter 2 counts paths)."),
    ],
    hint="2 embeddings + n_layers × (n_heads + 1 MLP).",
)


def check_count_additive_terms(fn) -> bool:
    """Exercise: terms in the final stream (embed, pos, every head, every MLP)."""
    return COUNT_TERMS.check(fn)


def _default_run():
    """The chapter's model and its cache on one prompt, for the exercises' own cases (built once)."""
    global _DEFAULT_RUN
    if _DEFAULT_RUN is None:
        import torch

        from .models import load_model

        model = load_model("rs-gpt2-4l")
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens("When Mary and John went to the store, John gave"))
        _DEFAULT_RUN = model, cache
    return _DEFAULT_RUN


_DEFAULT_RUN = None


def solution_block_delta(cache, layer: int):
    """Reference: Δ_ℓ, what block ℓ added to the stream."""
    return cache[f"blocks.{layer}.hook_resid_post"] - cache[f"blocks.{layer}.hook_resid_pre"]


def _block_delta_cases(cache=None, n_layers=None):
    if cache is None:
        model, cache = _default_run()
        n_layers = int(model.cfg.n_layers)
    return [((cache, l), {}) for l in range(n_layers)]


BLOCK_DELTA = Exercise("ch1.block-delta", "block_delta", solution_block_delta, _block_delta_cases, mistakes=[
        Mistake(lambda c, l: c[f"blocks.{l}.hook_resid_post"], "you returned the stream after the block, not the "
                "change. Subtract the stream that entered the block."),
        Mistake(lambda c, l: c[f"blocks.{l}.hook_resid_pre"] - c[f"blocks.{l}.hook_resid_post"],
                "the sign is flipped: Δ_ℓ is what the block adds, after minus before."),
        Mistake(lambda c, l: c[f"blocks.{l}.hook_resid_mid"] - c[f"blocks.{l}.hook_resid_pre"],
                "that is only the attention's write (hook_resid_mid); the block's MLP writes too, so end at hook_resid_post."),
    ],
    hint="Δ_ℓ = blocks.ℓ.hook_resid_post − blocks.ℓ.hook_resid_pre.",
)


def check_block_delta(fn, cache, n_layers: int) -> bool:
    """Exercise: Δ_ℓ, what block ℓ added to the stream."""
    return BLOCK_DELTA.check(fn, _block_delta_cases(cache, n_layers))


def solution_head_write(model, cache, layer: int, head: int):
    """Reference: one head's write into the stream, z_h W_O^h, [batch, pos, d_model]."""
    import torch

    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]  # [batch, pos, d_head]
    return torch.einsum("bpk,kd->bpd", z, model.W_O[layer, head])


def _head_write_cases(model=None, cache=None):
    if model is None:
        model, cache = _default_run()
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    return [((model, cache, l, h), {}) for l in range(L) for h in sorted({0, H - 1})]


HEAD_WRITE = Exercise("ch1.head-write", "head_write", solution_head_write, _head_write_cases, mistakes=[
        Mistake(lambda m, c, l, h: solution_head_write(m, c, l, h) + m.b_O[l],
                "you added the attention bias b_O. It belongs to the layer, not to any one head, so it is a separate term."),
        Mistake(lambda m, c, l, h: c[f"blocks.{l}.hook_attn_out"],
                "that is the whole layer's attention output (every head plus b_O); take one head's slice of hook_z."),
        Mistake(lambda m, c, l, h: c[f"blocks.{l}.attn.hook_z"][:, :, h],
                "hook_z lives in the head's own d_head-dimensional space; multiply by W_O[layer, head] to write into the stream."),
    ],
    atol=1e-4,
    hint="Take the head's slice of blocks.ℓ.attn.hook_z and multiply by W_O[ℓ, h].",
)


def check_head_write(fn, model, cache) -> bool:
    """Exercise: one head's write into the stream, z_h W_O^h."""
    return HEAD_WRITE.check(fn, _head_write_cases(model, cache))
