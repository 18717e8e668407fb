"""Glue between a chapter's computation and its prose.

Numbers in the prose are never typed: a cell computes them and ``glue``
hands them to the page (``{glue:text}`name```) when the book is built. Live
widgets need a kernel, so ``show_widget`` shows them in Colab and Jupyter and
prints a short note in the static book, where the plotly figure next to it
offers the same data without a kernel. Tables computed in a cell are shown with
``show_table``, which emits a real HTML table (the book's Markdown renderer for
cell outputs does not know pipe tables).
"""
from __future__ import annotations

import html as _html
import numbers
import re

from .env import in_book_build

__all__ = ["explain", "glue", "show_widget", "show_table", "table_html"]


def glue(name: str, value, display: bool = False):
    """Make ``value`` available to the prose under ``name`` and return it.

    Uses myst-nb's ``glue`` when it is installed (the book build); elsewhere
    (Colab) it only returns the value, so cells run unchanged.
    """
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"glue names must be letters, digits, '_' or '-', got {name!r}.")
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value


def explain(markdown: str) -> None:
    """Show a solution's explanation, written in Markdown (with ``$math$``), as the output of its cell.

    A solution's prose lives in a hidden code cell that calls this (tools/nbmeta.py puts it
    there): Colab and Jupyter cannot hide a text cell, but they hide this cell's code, and its
    explanation appears only when the reader runs it. The static book renders the output as MyST
    (the cell's ``mystnb.markdown_format``), inside the solution's dropdown.
    """
    if not isinstance(markdown, str) or not markdown.strip():
        raise ValueError("explain needs the explanation as a non-empty Markdown string.")
    from IPython.display import Markdown, display

    display(Markdown(markdown.strip()))


def show_widget(make_widget, what: str = "This explorer") -> None:
    """Display an ipywidgets explorer, or a note in the static book.

    ``make_widget`` is a widget or, better, a function of no arguments that builds
    one: in the static book it is never called, so no dead widget state is saved.
    """
    from IPython.display import HTML, display

    if in_book_build():
        display(
            HTML(
                '<div class="rs-live-note"><strong>Live explorer.</strong> '
                f"{what} needs a running Python kernel. Open this chapter in Colab "
                "(rocket icon at the top of the page) or in Jupyter to use it; the figure "
                "above shows the same data and works right here.</div>"
            )
        )
    else:
        from .env import enable_colab_widgets

        widget = make_widget() if callable(make_widget) and not hasattr(make_widget, "comm") else make_widget
        enable_colab_widgets(widget)  # Colab draws ipywidgets 8 and FigureWidget only with its custom manager
        display(widget)


def _cell_html(value) -> tuple[str, bool]:
    """HTML for one cell and whether it is a number (numbers are right-aligned)."""
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        value = bool(value)
        return ("✓" if value else "✗"), False
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}", True
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}", True
    if not isinstance(value, str):
        raise TypeError(f"show_table cells must be str, int, float or bool, got {type(value).__name__} "
                        f"({value!r}); format it into a string first.")
    out, pos = [], 0
    for m in re.finditer(r"\$([^$]+)\$|`([^`]+)`", value):
        out.append(_html.escape(value[pos:m.start()]))
        if m.group(1) is not None:  # inline math, typeset by MathJax on the page
            out.append(f'<span class="math notranslate nohighlight">\\({_html.escape(m.group(1))}\\)</span>')
        else:
            out.append(f"<code>{_html.escape(m.group(2))}</code>")
        pos = m.end()
    out.append(_html.escape(value[pos:]))
    return "".join(out), False


def table_html(rows, columns, caption: str | None = None) -> str:
    """The HTML of :func:`show_table` (see there)."""
    if isinstance(columns, str) or not hasattr(columns, "__len__") or len(columns) == 0:
        raise ValueError("columns must be a non-empty list of column names.")
    if not all(isinstance(c, str) for c in columns):
        raise TypeError("column names must be strings.")
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise TypeError("rows must be a list of rows (each a list or tuple of cells).")
    rows = [list(r) if not isinstance(r, (str, bytes)) and hasattr(r, "__iter__") else r for r in rows]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise TypeError(f"row {i} is {type(row).__name__}, not a list or tuple of cells.")
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells but there are {len(columns)} columns: {row!r}")
    if caption is not None and not isinstance(caption, str):
        raise TypeError("caption must be a string or None.")
    head = "".join(f'<th scope="col">{_cell_html(c)[0]}</th>' for c in columns)
    body = []
    for row in rows:
        cells = [_cell_html(v) for v in row]
        body.append("<tr>" + "".join(f'<td class="rs-num">{h}</td>' if num else f"<td>{h}</td>" for h, num in cells)
                    + "</tr>")
    cap = f"<caption>{_cell_html(caption)[0]}</caption>" if caption else ""
    return (f'<div class="rs-table-wrap"><table class="rs-table">{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _table_markdown(rows, columns, caption) -> str:
    def cell(v):
        text = _cell_html(v)[0] if not isinstance(v, str) else v
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ([f"**{caption}**", ""] if caption else []) + [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ] + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def show_table(rows, columns, caption: str | None = None) -> None:
    """Display a table computed in a cell, as a real table everywhere.

    ``rows`` is a list of rows, each a list or tuple with one cell per name in
    ``columns``. A cell is a string, an int (shown with thousands separators), a
    float (4 significant digits) or a bool (✓/✗); format anything else into a
    string first. Inside a string, ``$h_0$`` is inline math and `` `x` `` is code.
    In the static book and Jupyter the table is HTML (math typeset by MathJax);
    Colab and other front ends that prefer Markdown get a pipe table.
    """
    from IPython.display import display

    html = table_html(rows, columns, caption)
    rows = [list(r) for r in rows]
    display({"text/html": html, "text/markdown": _table_markdown(rows, columns, caption),
             "text/plain": _table_markdown(rows, columns, caption)}, raw=True)
