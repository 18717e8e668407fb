"""Figures that work in three places: the static book, Colab and Jupyter.

In the static book there is no kernel, so every interaction a figure offers
(sliders, buttons, hover, clicks) must be plotly's own. The book loads
plotly.js once per page from its own static files; figures are emitted as a
``<div>`` plus a call to ``Plotly.newPlot`` and never inline the library.
In Colab and Jupyter plotly's usual renderers are used. Call :func:`show`
rather than ``fig.show()`` so a figure lands correctly everywhere.

The module also holds the figure builders that more than one chapter uses.
"""
from __future__ import annotations

import json
import uuid
from typing import Sequence

import numpy as np

from .env import in_book_build, in_colab

__all__ = [
    "setup_plotting",
    "show",
    "PALETTE",
    "slider_bars",
    "heatmap",
]

#: Colour-blind-safe palette (Okabe & Ito 2008), used in every chapter.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

_BOOK_CONFIG = {"responsive": True, "displaylogo": False}

#: Trace types in the plotly.js bundle the book serves (plotly.js-cartesian-dist-min,
#: 1.5 MB instead of 4.8 MB for the full library). ``show`` refuses others, so a
#: figure can never silently fail to draw on the static page.
BOOK_TRACE_TYPES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d",
                              "histogram2dcontour", "image", "pie", "scatter", "scatterternary", "violin"})


def setup_plotting() -> None:
    """Pick the plotly template and renderer for where the code is running."""
    import plotly.io as pio

    template = pio.templates["plotly_white"]
    template.layout.colorway = PALETTE
    template.layout.font = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}
    pio.templates["residual"] = template
    pio.templates.default = "residual"
    if in_colab():
        pio.renderers.default = "colab"


def _book_bundle(fig, post_script: str | None) -> dict:
    div_id = f"rs-{uuid.uuid5(uuid.NAMESPACE_OID, fig.to_json()).hex[:12]}"
    html = fig.to_html(
        full_html=False,
        include_plotlyjs=False,  # plotly.min.js is loaded once per page by the book
        div_id=div_id,
        config=_BOOK_CONFIG,
        post_script=post_script,
        default_width="100%",
    )
    return {"text/html": f'<div class="rs-figure">{html}</div>', "text/plain": f"<plotly figure {div_id}>"}


def show(fig, post_script: str | None = None) -> None:
    """Display a plotly figure wherever the chapter runs.

    ``post_script`` is JavaScript run after the figure is drawn, with
    ``{plot_id}`` replaced by the figure's element id; chapters use it for
    kernel-free interactions that plotly's controls cannot express (clicks).
    """
    import plotly.graph_objects as go

    if not isinstance(fig, go.Figure):
        raise TypeError(f"show expects a plotly Figure, got {type(fig).__name__}.")
    unsupported = sorted({t.type for t in fig.data} - BOOK_TRACE_TYPES)
    if unsupported:
        raise ValueError(f"Trace type(s) {unsupported} are not in the book's plotly.js bundle; "
                         f"use one of {sorted(BOOK_TRACE_TYPES)}.")
    if in_book_build():
        from IPython.display import display

        display(_book_bundle(fig, post_script), raw=True)
    elif post_script is not None:
        import plotly.io as pio

        pio.show(fig, post_script=post_script)
    else:
        fig.show()


def slider_bars(
    frames: Sequence[tuple[Sequence[str], Sequence[float]]],
    step_labels: Sequence[str],
    title: str,
    xaxis_title: str,
    yaxis_title: str,
    slider_prefix: str = "",
    titles: Sequence[str] | None = None,
    active: int = 0,
):
    """A bar chart with a slider: step ``i`` shows ``frames[i] = (labels, values)``.

    Works without a kernel: the slider restyles the single bar trace with data
    stored in the figure. ``titles`` optionally gives each step its own title.
    """
    import plotly.graph_objects as go

    if len(frames) == 0 or len(frames) != len(step_labels):
        raise ValueError(
            f"slider_bars needs one (labels, values) pair per step label; got {len(frames)} frames "
            f"and {len(step_labels)} labels."
        )
    if titles is not None and len(titles) != len(frames):
        raise ValueError("titles must have one entry per frame.")
    if not 0 <= active < len(frames):
        raise ValueError(f"active must index a frame (0..{len(frames) - 1}), got {active}.")
    ymax = max(float(np.max(v)) for _, v in frames)
    fig = go.Figure(go.Bar(x=list(frames[active][0]), y=list(frames[active][1]), marker_color=PALETTE[0]))
    steps = []
    for i, ((labels, values), lab) in enumerate(zip(frames, step_labels)):
        layout_update = {"title.text": titles[i]} if titles is not None else {}
        steps.append(
            {
                "method": "update",
                "label": str(lab),
                "args": [{"x": [list(labels)], "y": [list(map(float, values))]}, layout_update],
            }
        )
    fig.update_layout(
        title=titles[active] if titles is not None else title,
        xaxis_title=xaxis_title,
        yaxis_title=yaxis_title,
        yaxis_range=[0, ymax * 1.08],
        sliders=[{"active": active, "currentvalue": {"prefix": slider_prefix}, "steps": steps, "pad": {"t": 60}}],
        margin={"b": 140},
        height=480,
    )
    return fig


def heatmap(
    z,
    x: Sequence[str],
    y: Sequence[str],
    title: str,
    xaxis_title: str,
    yaxis_title: str,
    colorbar_title: str = "",
    text=None,
    zmid: float | None = None,
    colorscale: str = "Blues",
):
    """A labelled heatmap; ``text`` (same shape as ``z``) is written in the cells."""
    import plotly.graph_objects as go

    z = np.asarray(z, dtype=float)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"z has shape {z.shape} but the labels give ({len(y)}, {len(x)}) (rows=y, columns=x).")
    trace = go.Heatmap(
        z=z,
        x=list(x),
        y=list(y),
        colorscale="RdBu" if zmid is not None else colorscale,
        zmid=zmid,
        reversescale=zmid is not None,
        colorbar={"title": {"text": colorbar_title}},
        hovertemplate="%{y} · %{x}<br>%{z:.3g}<extra></extra>",
    )
    if text is not None:
        trace.text = np.asarray(text).tolist()
        trace.texttemplate = "%{text}"
    fig = go.Figure(trace)
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title, height=420)
    fig.update_yaxes(autorange="reversed")
    return fig


def to_json_data(array, decimals: int = 4) -> str:
    """Round an array and serialise it for embedding in a figure's script."""
    return json.dumps(np.round(np.asarray(array, dtype=float), decimals).tolist())
