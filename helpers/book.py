"""Glue between a chapter's computation and its prose.

Numbers in the prose are never typed: a cell computes them and ``glue``
hands them to the page (``{glue:text}`name```) when the book is built. Live
widgets need a kernel, so ``show_widget`` shows them in Colab and Jupyter and
prints a short note in the static book, where the plotly figure next to it
offers the same data without a kernel.
"""
from __future__ import annotations

from .env import in_book_build

__all__ = ["glue", "show_widget"]


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
        widget = make_widget() if callable(make_widget) and not hasattr(make_widget, "comm") else make_widget
        display(widget)
