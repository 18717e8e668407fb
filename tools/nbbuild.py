"""Tiny authoring aid: build a chapter notebook from a Python list of cells.

    cells = [md("# Title"), code("x = 1")]
    write(cells, "chapters/01_x.ipynb")

Used while drafting; the .ipynb it writes is the source that ships.
"""
from __future__ import annotations

import textwrap

import nbformat

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


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


SETUP = '''# Setup: in Colab this installs the book's helpers package; locally it does nothing.
import importlib.util, subprocess, sys
if importlib.util.find_spec("helpers") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "git+https://github.com/residual-stream/residual-stream"], check=True)
import helpers'''
