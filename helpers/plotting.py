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
import re
import uuid
from typing import Sequence

import numpy as np

from .env import in_book_build, in_colab

__all__ = [
    "setup_plotting",
    "phase_change_figure",
    "show",
    "book_layout",
    "wrap_title",
    "token_label",
    "token_labels",
    "PALETTE",
    "slider_bars",
    "heatmap",
]

#: Colour-blind-safe palette (Okabe & Ito 2008), used in every chapter.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: plotly's toolbar: shown on hover only, with the few buttons a reader uses, in a band of
#: its own above the title (see :func:`book_layout`), so it never covers the title.
_BOOK_CONFIG = {
    "responsive": True,
    "displaylogo": False,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "zoomIn2d", "zoomOut2d",
                               "toggleSpikelines", "hoverClosestCartesian", "hoverCompareCartesian"],
}

#: Layout rules applied by :func:`show` (and re-applied by ``_static/residual.js`` at the
#: width a reader's screen actually has).
MIN_FONT_PX = 10  # no text in a figure below this (the page check fails under 9 px)
TITLE_FONT_PX = 16
MODEBAR_BAND_PX = 48  # the toolbar's own row above the title
NOMINAL_WIDTH_PX = 676  # a figure's width in the book's text column at 1280 px
MENU_BAND_PX = 40  # a row of buttons or a dropdown between the title and the plot
PHONE_ROW_PX = 300  # a row of menu buttons wider than this becomes a dropdown

#: Trace types in the plotly.js bundle the book serves (plotly.js-cartesian-dist-min,
#: 1.5 MB instead of 4.8 MB for the full library). ``show`` refuses others, so a
#: figure can never silently fail to draw on the static page.
BOOK_TRACE_TYPES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d",
                              "histogram2dcontour", "image", "pie", "scatter", "scatterternary", "violin"})


def setup_plotting() -> None:
    """Pick the plotly template and renderer for where the code is running."""
    import plotly.graph_objects as go
    import plotly.io as pio

    template = go.layout.Template(pio.templates["plotly_white"])
    template.layout.colorway = PALETTE
    template.layout.font = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}
    template.layout.title.font.size = TITLE_FONT_PX
    template.layout.hoverlabel.font.size = 12
    # Hover shows rounded numbers ("0.183", not "0.1829612"); category axes ignore this.
    template.layout.xaxis.hoverformat = ".4~g"
    template.layout.yaxis.hoverformat = ".4~g"
    template.data.heatmap = [go.Heatmap(zhoverformat=".4~g")]
    pio.templates["residual"] = template
    pio.templates.default = "residual"
    if in_colab():
        pio.renderers.default = "colab"


# ---------------------------------------------------------------- tokens as labels

def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    shifted = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_DECODER = _byte_decoder()
_SHIFTED = {ch for ch, b in _BYTE_DECODER.items() if ord(ch) >= 256}
_SPECIAL = {"\n": "⏎", "\r": "␍", "\t": "⇥"}


def _readable_bytes(data: bytes) -> str:
    r"""Decode UTF-8, writing each byte that is not part of a whole character as ``\\xNN``."""
    out, i = [], 0
    while i < len(data):
        for n in (1, 2, 3, 4):
            try:
                out.append(data[i:i + n].decode("utf-8"))
                i += n
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(f"\\x{data[i]:02x}")
            i += 1
    return "".join(out)


def token_label(token, byte_level: bool | None = None) -> str:
    r"""A token as a readable label for a tick, legend or hover: never "�", never invisible.

    ``token`` is a token string as a tokenizer's ``convert_ids_to_tokens`` gives it
    (GPT-2's byte-level form: "Ġthe", "Ċ"), a decoded string (" the", "\n"), or ``bytes``.
    A byte that is only part of a UTF-8 character becomes ``\xe2``; a decoded "�"
    (the byte was lost in decoding) becomes ``\x??``. Line breaks and tabs show as ⏎ and ⇥,
    a token of only spaces as ␣ (one per space); a leading space stays a space.
    ``byte_level`` forces how a string is read; by default a string is read as
    byte-level when it contains one of the alphabet's stand-in characters (Ġ, Ċ, …).
    """
    if isinstance(token, (bytes, bytearray)):
        text = _readable_bytes(bytes(token))
    elif isinstance(token, str):
        if byte_level is None:
            byte_level = any(ch in _SHIFTED for ch in token) and all(ch in _BYTE_DECODER for ch in token)
        if byte_level:
            missing = sorted({ch for ch in token if ch not in _BYTE_DECODER})
            if missing:
                raise ValueError(f"{token!r} is not a byte-level token: {missing} are not in GPT-2's byte "
                                 "alphabet; pass byte_level=False for decoded text.")
            text = _readable_bytes(bytes(_BYTE_DECODER[ch] for ch in token))
        else:
            text = token.replace("\ufffd", "\\x??")
    else:
        raise TypeError(f"token_label expects a str or bytes token, got {type(token).__name__}.")
    if text == "":
        return "∅"
    if text.strip(" ") == "":
        return "␣" * len(text)
    text = "".join(_SPECIAL.get(ch, ch) for ch in text)
    return "".join(f"\\x{ord(ch):02x}" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)


def token_labels(tokenizer, ids, unique: bool = False) -> list[str]:
    r"""Readable labels for token ids (a list, 1-D array or tensor) from a tokenizer or model.

    Reads each id's byte-level form, so a token holding part of a UTF-8 character is
    shown as its bytes (``\xe2\x80``) rather than "�". With ``unique=True`` repeated
    labels get their position appended ("the ·3"), because plotly merges equal
    category labels on an axis into one tick.
    """
    tok = getattr(tokenizer, "tokenizer", None) or tokenizer
    if not hasattr(tok, "convert_ids_to_tokens"):
        raise TypeError("token_labels needs a tokenizer (or a model with .tokenizer) that has "
                        f"convert_ids_to_tokens; got {type(tokenizer).__name__}.")
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = list(ids)
    if any(isinstance(i, (list, tuple)) for i in ids):
        raise ValueError("token_labels takes one sequence of ids (1-D), not a batch.")
    raw = tok.convert_ids_to_tokens([int(i) for i in ids])
    byte_level = bool(getattr(getattr(tok, "backend_tokenizer", None), "pre_tokenizer", None)) and \
        "ByteLevel" in repr(getattr(tok.backend_tokenizer, "pre_tokenizer", ""))
    labels = [token_label(t if t is not None else "", byte_level=byte_level or None) for t in raw]
    if unique:
        seen: dict[str, int] = {}
        for lab in labels:
            seen[lab] = seen.get(lab, 0) + 1
        labels = [f"{lab} ·{i}" if seen[lab] > 1 else lab for i, lab in enumerate(labels)]
    return labels


# ---------------------------------------------------------------- layout rules

_TAG = re.compile(r"<[^>]+>")
_SOFT_BREAK = "<br >"  # the line breaks wrap_title inserts; an author's own <br> is kept


def _visible_len(text: str) -> float:
    """Width of text in em, roughly, for a sans-serif face (capitals and digits are wider)."""
    plain = _TAG.sub("", text)
    return sum(0.68 if ch.isupper() or ch.isdigit() else 0.3 if ch in " il.,:;'|!" else 0.52 for ch in plain)


def wrap_title(text: str, width_px: float, font_px: float = TITLE_FONT_PX) -> str:
    """Break ``text`` with ``<br >`` at spaces so no line is wider than ``width_px``.

    Existing ``<br>`` breaks are kept and earlier soft breaks are undone first, so
    wrapping twice gives the same result. ``_static/residual.js`` applies the same
    rule again at the width a reader's screen gives the figure.
    """
    if not isinstance(text, str):
        raise TypeError(f"wrap_title expects a str, got {type(text).__name__}.")
    if width_px <= 0 or font_px <= 0:
        raise ValueError("wrap_title needs a positive width and font size.")
    budget = width_px / font_px
    segments = []
    for hard in re.split(r"<br\s*/?>", text.replace(_SOFT_BREAK, " ")):
        lines, line = [], ""
        for word in hard.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _visible_len(trial) > budget:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
        segments.append(_SOFT_BREAK.join(lines))
    return "<br>".join(segments)


def _title_lines(text: str) -> int:
    return len(re.split(r"<br\s*/?>", text)) if text else 0


def _floor_fonts(node, parent_key: str = "") -> None:
    """Raise every font size below MIN_FONT_PX in a figure dict (layout and traces)."""
    if isinstance(node, dict):
        if parent_key.endswith("font") and isinstance(node.get("size"), (int, float)) \
                and node["size"] < MIN_FONT_PX:
            node["size"] = MIN_FONT_PX
        for key, value in node.items():
            _floor_fonts(value, key)
    elif isinstance(node, list):
        for item in node:
            _floor_fonts(item, parent_key)


def _view_labels(layout: dict) -> list[str]:
    """Labels of the controls' opening state: each menu's active button, each slider's active step."""
    labels = []
    for menu in layout.get("updatemenus", []) or []:
        buttons = menu.get("buttons") or []
        active = menu.get("active", 0)
        if buttons and active is not None and 0 <= active < len(buttons):
            labels.append(str(buttons[active].get("label", "")))
    for slider in layout.get("sliders", []) or []:
        steps = slider.get("steps") or []
        active = slider.get("active", 0) or 0
        if steps and 0 <= active < len(steps):
            labels.append(str(steps[active].get("label", "")))
    return labels


def book_layout(fig):
    """The book's layout rules, applied by :func:`show` to a copy of ``fig``.

    * the toolbar gets a band of its own at the top; the title sits under it, left-aligned,
      wrapped to the figure's width, and the top margin grows with its lines;
    * menus placed above the plot get a band between the title and the plot;
    * no font is smaller than ``MIN_FONT_PX``; heatmaps without numbers in their cells
      keep a colour bar;
    * ``layout.meta`` records the unwrapped title and, for heatmaps, a minimum width
      (``_static/residual.js`` uses both at phone width).

    A figure with menus or sliders may declare the view it opens on with
    ``fig.update_layout(meta={"view": "<label>"})``: the label must be the active
    button's or step's label, or this raises ValueError (the page check tests it too).
    """
    import plotly.graph_objects as go

    spec = fig.to_plotly_json()
    spec = json.loads(json.dumps(spec, cls=_Encoder))
    layout = spec.setdefault("layout", {})
    meta = layout.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError("layout.meta must be a dict (the book keeps 'view' and its own keys there).")
    meta = dict(meta or {})
    view = meta.get("view")
    if view is not None:
        labels = _view_labels(layout)
        if not labels:
            raise ValueError(f"meta.view={view!r} but the figure has no menu or slider to open on a view.")
        if str(view) not in labels:
            raise ValueError(f"meta.view={view!r} is not the opening state of the figure's controls "
                             f"(active labels: {labels}); set the menu's or slider's `active` to that view.")
    _floor_fonts(spec)

    title = layout.get("title") or {}
    if isinstance(title, str):
        title = {"text": title}
    text = title.get("text") or ""
    font_px = (title.get("font") or {}).get("size") or TITLE_FONT_PX
    if text:
        meta["title"] = text.replace(_SOFT_BREAK, " ")
        text = wrap_title(text, NOMINAL_WIDTH_PX - 24, font_px)
    title.update(text=text, x=0, xref="container", xanchor="left", y=1, yref="container", yanchor="top",
                 pad={"t": MODEBAR_BAND_PX, "l": 12})
    title.pop("automargin", None)
    layout["title"] = title

    # notes standing on the plot's top edge (subplot titles) need a band under the title too
    note_px = max([((a.get("font") or {}).get("size") or 16) for a in layout.get("annotations", []) or []
                   if a.get("yref", "y") == "paper" and (a.get("y") or 0) >= 1 and a.get("yanchor") == "bottom"]
                  or [0])
    note_band = int(note_px * 1.4) if note_px else 0
    meta["note_band"] = note_band
    menus_above = False
    for menu in layout.get("updatemenus", []) or []:
        # a row of buttons wider than a phone's figure becomes a dropdown
        labels = [str(b.get("label", "")) for b in menu.get("buttons", []) or []]
        row_px = sum(_visible_len(lab) * 12 + 30 for lab in labels)
        if menu.get("type") == "buttons" and menu.get("direction", "left") in ("left", "right") \
                and row_px > PHONE_ROW_PX:
            menu.update(type="dropdown", direction="down")
        if (menu.get("y") if menu.get("y") is not None else 1) >= 1:
            menus_above = True
            menu.update(y=1, yanchor="bottom", pad={"b": 6 + note_band, "t": 0})
    # Wrap titles a button or slider step switches to, the same way.
    for control in (layout.get("updatemenus") or []) + (layout.get("sliders") or []):
        for item in control.get("buttons", []) + control.get("steps", []):
            for arg in item.get("args", []) or []:
                if isinstance(arg, dict):
                    for key in ("title.text", "title"):
                        if isinstance(arg.get(key), str):
                            arg[key] = wrap_title(arg[key], NOMINAL_WIDTH_PX - 24, font_px)
    lines = max([_title_lines(text)] + [
        _title_lines(arg.get(key, "")) for control in (layout.get("updatemenus") or []) + (layout.get("sliders") or [])
        for item in control.get("buttons", []) + control.get("steps", []) for arg in item.get("args", []) or []
        if isinstance(arg, dict) for key in ("title.text", "title") if isinstance(arg.get(key), str)])
    top = MODEBAR_BAND_PX + int(lines * font_px * 1.3) + 16 + (MENU_BAND_PX if menus_above else 0) + note_band
    margin = layout.setdefault("margin", {})
    margin["t"] = max(top, 40)
    meta["menu_band"] = MENU_BAND_PX if menus_above else 0

    heatmap_cols = 0
    for trace in spec.get("data", []):
        if trace.get("type") == "heatmap":
            if trace.get("showscale") is False and not (trace.get("texttemplate") or trace.get("text")):
                trace["showscale"] = True
            if trace.get("texttemplate") or trace.get("text"):
                trace.setdefault("textfont", {})
                trace["textfont"]["size"] = max(trace["textfont"].get("size") or 0, MIN_FONT_PX + 1)
            # the colour bar's title runs along the bar, not above it into the menus
            cbar = trace.setdefault("colorbar", {})
            if isinstance(cbar.get("title"), dict) and cbar["title"].get("text"):
                cbar["title"].setdefault("side", "right")
            x = trace.get("x")
            z = trace.get("z") or []
            cols = len(x) if x is not None else (len(z[0]) if z and isinstance(z[0], list) else 0)
            heatmap_cols = max(heatmap_cols, cols)
    if heatmap_cols:
        meta["min_width"] = int(min(1000, 170 + 30 * heatmap_cols))
    layout["meta"] = meta
    return go.Figure(spec, skip_invalid=False)


class _Encoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        import plotly.utils

        return plotly.utils.PlotlyJSONEncoder.default(self, o)


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
    fig = book_layout(fig)
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
        sliders=[{"active": active, "currentvalue": {"prefix": slider_prefix}, "steps": steps, "pad": {"t": 100}}],
        margin={"b": 190},  # rotated tick labels and the axis title sit above the slider, also on a phone
        height=480,
        meta={"view": str(step_labels[active])},
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


_PHASE_PANELS = {"corpus_loss": "loss on held-out windows (nats/token)", "train_loss": "training loss (nats/token)",
                 "icl_score": "ICL score (nats; lower = context helps more)",
                 "best_prefix_matching": "best prefix-matching score over heads"}


def phase_change_figure(log: Sequence[dict], step: int, title: str | None = None, window: tuple | None = None,
                        loss_key: str | None = None):
    """Three stacked panels over training steps (a loss, the ICL score, the best
    prefix-matching score) with a dashed line at ``step`` (where the induction head
    forms) and, if ``window = (start, end)`` is given, that stretch of training shaded.

    ``log`` is a bundled model's training log (:func:`helpers.zoo.evals.training_log`);
    the loss panel shows ``loss_key`` (default: ``corpus_loss`` if logged, else
    ``train_loss``). Used by the model-organisms chapter and chapter 5.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not log or not isinstance(log[-1], dict):
        raise ValueError("log must be a non-empty list of dicts (one per logged step).")
    if loss_key is None:
        loss_key = "corpus_loss" if "corpus_loss" in log[-1] else "train_loss"
    keys = [loss_key, "icl_score", "best_prefix_matching"]
    if any(k not in log[-1] for k in keys) or "step" not in log[-1]:
        raise ValueError(f"log entries need the keys {['step'] + keys}.")
    if window is not None and (len(window) != 2 or window[0] > window[1]):
        raise ValueError(f"window must be (start_step, end_step) with start <= end, got {window!r}.")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[_PHASE_PANELS.get(k, k.replace("_", " ")) for k in keys])
    for row, k in enumerate(keys, start=1):
        pts = [(e["step"], e[k]) for e in log if e.get(k) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[round(float(p[1]), 4) for p in pts], mode="lines+markers",
                                 marker_size=3, line_color=PALETTE[row - 1], name=k, showlegend=False,
                                 hovertemplate="step %{x}: %{y:.3f}<extra></extra>"), row=row, col=1)
        fig.add_vline(x=step, line_dash="dash", line_color=PALETTE[3], row=row, col=1)
        if window is not None:
            fig.add_vrect(x0=window[0], x1=window[1], fillcolor=PALETTE[3], opacity=0.1, line_width=0, row=row, col=1)
    fig.update_xaxes(title_text="training step", row=3, col=1)
    if title is None:
        title = f"The induction head forms around step {step:,},<br>and the context starts to pay"
    fig.update_layout(height=660, margin={"t": 110}, title=title)
    return fig
