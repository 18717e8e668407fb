"""Helpers for The Residual Stream, an executable textbook on how transformers compute.

What chapters share lives here: where code runs (:mod:`helpers.env`), how
models are loaded (:func:`load_model`), how figures and numbers reach the page
(:mod:`helpers.plotting`, :mod:`helpers.book`), exercise checkers
(:mod:`helpers.exercises`), the bundled model organisms (:mod:`helpers.zoo`),
and one module per chapter topic (``helpers.stream``, ``helpers.lens`` …),
imported by the chapters that need them.
"""
from __future__ import annotations

from . import claims
from .book import explain, glue, show_table, show_widget
from .claims import claim, identity
from .env import get_device, hub_reachable, in_book_build, in_colab, offline_mode, set_seed
from .exercises import CheckFailed
from .models import ModelUnavailableError, available_models, load_model
from .plotting import PALETTE, setup_plotting, show, token_label, token_labels

__version__ = "0.1.0"

#: The repository chapters install from in Colab (kept equal to _config.yml by a test).
REPOSITORY_URL = "https://github.com/residual-stream/residual-stream"

__all__ = [
    "claims",
    "claim",
    "identity",
    "explain",
    "glue",
    "show_widget",
    "show_table",
    "get_device",
    "hub_reachable",
    "in_book_build",
    "in_colab",
    "offline_mode",
    "set_seed",
    "CheckFailed",
    "ModelUnavailableError",
    "available_models",
    "load_model",
    "PALETTE",
    "setup_plotting",
    "show",
    "token_label",
    "token_labels",
    "REPOSITORY_URL",
]

setup_plotting()
