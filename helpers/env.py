"""Where the book is running, and how to make a run repeatable.

Every chapter starts by asking the same questions: which device should tensors
live on, is this Colab, is the Hugging Face hub reachable, is the static book
being built right now? The answers live here, in one place, so that a chapter
behaves the same on a laptop CPU, a Colab GPU and the book's build machine.
"""
from __future__ import annotations

import os
import random
import socket
import sys

__all__ = [
    "get_device",
    "set_seed",
    "in_colab",
    "in_book_build",
    "hub_reachable",
    "offline_mode",
    "needs_custom_widget_manager",
    "enable_colab_widgets",
]

#: Widget model modules that Colab renders without its custom widget manager
#: (ipywidgets 7's own controls and output widget).
_COLAB_BUILTIN_WIDGET_MODULES = ("@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output")
_colab_widgets_enabled = False

BOOK_BUILD_ENV = "RS_BOOK_BUILD"


def get_device(prefer: str | None = None):
    """The device chapters compute on: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` forces a choice ("cpu", "cuda", "mps"); it must be available.
    """
    import torch

    valid = ("cpu", "cuda", "mps")
    if prefer is not None:
        if prefer not in valid:
            raise ValueError(f"Unknown device {prefer!r}: choose one of {valid}.")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise ValueError("Device 'cuda' was requested but no CUDA GPU is visible.")
        if prefer == "mps" and not _mps_available():
            raise ValueError("Device 'mps' was requested but MPS is not available.")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def set_seed(seed: int = 0) -> int:
    """Seed Python, NumPy and torch (all devices) so a chapter's numbers repeat."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def in_book_build() -> bool:
    """True while Jupyter Book executes the chapters to make the static site."""
    return os.environ.get(BOOK_BUILD_ENV, "") == "1"


def offline_mode() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or (
        os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes")
    )


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds.

    One attempt, no retries: a reader without network gets an answer in
    seconds instead of the hub client's minute of back-off.
    """
    if offline_mode():
        return False
    import threading

    result = {"ok": False}

    def probe():  # DNS lookups ignore socket timeouts, so probe in a thread
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return result["ok"]


def needs_custom_widget_manager(widget=None) -> bool:
    """Whether Colab needs its custom widget manager to draw ``widget``.

    Colab draws ipywidgets 7's own controls by itself. It needs the custom
    widget manager for everything else: any widget when ipywidgets 8 is
    installed, and third-party widgets (plotly's ``FigureWidget``, anywidget
    widgets) with ipywidgets 7. ``widget`` is inspected with its children;
    without one, only the ipywidgets version decides.
    """
    import ipywidgets

    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        return True
    if widget is None:
        return False
    seen, stack = set(), [widget]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        module = getattr(w, "_model_module", None)
        if module is not None and module not in _COLAB_BUILTIN_WIDGET_MODULES:
            return True
        stack.extend(getattr(w, "children", ()) or ())
    return False


def enable_colab_widgets(widget=None) -> bool:
    """In Colab, switch on its custom widget manager when ``widget`` needs it (once per session).

    Call it just before displaying a widget (``helpers.show_widget`` does).
    Outside Colab, or when Colab draws the widget by itself, it does nothing.
    Returns True when the custom widget manager is on after the call.
    """
    global _colab_widgets_enabled
    if _colab_widgets_enabled:
        return True
    if not in_colab() or not needs_custom_widget_manager(widget):
        return False
    try:
        from google.colab import output
    except ImportError:  # COLAB_RELEASE_TAG set, but not a Colab kernel
        return False
    output.enable_custom_widget_manager()
    _colab_widgets_enabled = True
    return True
