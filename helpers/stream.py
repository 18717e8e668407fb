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
    "output_bias_shares",
    "silencing_costs",
    "check_count_additive_terms",
    "check_rotary_terms",
    "check_joint_cost",
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


def silencing_costs(model, tokens, blocks: Sequence[int] | None = None) -> list[float]:
    """Increase in mean next-token loss on ``tokens`` when each block is replaced by the identity.

    ``blocks`` lists the blocks to silence one at a time (default: every block).
    """
    import torch

    L = int(model.cfg.n_layers)
    blocks = list(range(L)) if blocks is None else [require_int("block", b, 0, L - 1) for b in blocks]
    with torch.no_grad():
        base = model(tokens, return_type="loss").item()
        out = []
        for b in blocks:
            with model.hooks(fwd_hooks=zero_block_hooks([b], L)):
                out.append(model(tokens, return_type="loss").item() - base)
    return out


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


def solution_joint_cost(model, tokens, a: int, b: int) -> float:
    """Reference: loss increase with blocks a and b silenced together, minus the sum of the single increases."""
    import torch

    L = int(model.cfg.n_layers)
    with torch.no_grad():
        base = model(tokens, return_type="loss").item()
        with model.hooks(fwd_hooks=zero_block_hooks([a, b], L)):
            both = model(tokens, return_type="loss").item() - base
    single_a, single_b = silencing_costs(model, tokens, [a, b])
    return both - (single_a + single_b)


def _joint_cost_cases(model=None, texts=None):
    if model is None:
        model, *texts = _default_run()
    L = int(model.cfg.n_layers)
    pairs = [(0, 1), (L - 2, L - 1)] if L > 2 else [(0, 1)]
    return [((model, t, a, b), {}) for t in texts for a, b in pairs]


def _joint_without_base(model, tokens, a, b):
    import torch

    L = int(model.cfg.n_layers)
    with torch.no_grad():
        base = model(tokens, return_type="loss").item()
        with model.hooks(fwd_hooks=zero_block_hooks([a, b], L)):
            both = model(tokens, return_type="loss").item()
    single_a, single_b = silencing_costs(model, tokens, [a, b])
    return both - (single_a + base + single_b + base)


JOINT_COST = Exercise(
    "ch1.joint-cost", "joint_cost", solution_joint_cost, _joint_cost_cases,
    mistakes=[
        Mistake(lambda m, t, a, b: 0.0, "you assumed effects add because writes add. Block b computes its write "
                "from what block a left behind, so silencing a changes b's write too."),
        Mistake(lambda m, t, a, b: -solution_joint_cost(m, t, a, b), "the sign is flipped: the answer is the joint "
                "cost minus the sum of the single costs."),
        Mistake(_joint_without_base, "you subtracted raw losses, not increases: each cost is a loss minus the "
                "unsilenced loss, so the base loss must come off each term once."),
    ],
    atol=1e-3,
    rtol=1e-3,
)


def check_joint_cost(fn, model, texts, pairs=None) -> bool:
    """Exercise (predict, then measure): is silencing two blocks the sum of silencing each?"""
    L = int(model.cfg.n_layers)
    pairs = pairs or ([(0, 1), (L - 2, L - 1)] if L > 2 else [(0, 1)])
    return JOINT_COST.check(fn, [((model, t, a, b), {}) for t in texts for a, b in pairs])


def solution_least_needed_block(model, tokens) -> int:
    """Reference: the block (0-based) whose silencing raises the loss on ``tokens`` least."""
    costs = silencing_costs(model, tokens)
    return int(min(range(len(costs)), key=costs.__getitem__))


def _least_needed_cases(model=None, texts=None):
    if model is None:
        model, *texts = _default_run()
    return [((model, t), {}) for t in texts]


LEAST_NEEDED = Exercise(
    "ch1.least-needed", "least_needed_block", solution_least_needed_block, _least_needed_cases,
    mistakes=[
        Mistake(lambda m, t: int(max(range(int(m.cfg.n_layers)), key=silencing_costs(m, t).__getitem__)),
                "that is the block the model needs MOST (the largest loss increase); the question asks for the least."),
        Mistake(lambda m, t: solution_least_needed_block(m, t) + 1,
                "the answer is 1 too high: return the block's index counted from 0, as in hook names."),
        Mistake(lambda m, t: int(m.cfg.n_layers) - 1, "you assumed the last block matters least. Measure it: "
                "which block is least needed depends on the text."),
    ],
)


def check_least_needed_block(fn, model, texts) -> bool:
    """Exercise (design): the block a model can most easily do without, on each text."""
    return LEAST_NEEDED.check(fn, [((model, t), {}) for t in texts])
