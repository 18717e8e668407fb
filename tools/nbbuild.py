"""Tiny authoring aid: build a chapter notebook from a Python list of cells.

    cells = [md("# Title"), code("x = 1")]
    write(cells, "chapters/01_x.ipynb")

Used while drafting; the .ipynb it writes is the source that ships.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import KERNELSPEC, SETUP  # noqa: E402  (the one definition of the setup cell)

__all__ = ["md", "code", "write", "setup", "SETUP"]


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, tags=None):
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(cells, path: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    nbformat.write(nb, path)


def setup():
    """The standard setup cell, as a code cell (every chapter's second cell)."""
    return nbformat.v4.new_code_cell(SETUP)
