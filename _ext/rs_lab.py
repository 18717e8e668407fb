"""Sphinx extension for the lab page (lab.md): build its bundle and serve it with that page only.

When the book has a ``lab.md``, this extension makes sure ``_build/lab/site/lab/`` holds
the lab's files before Sphinx writes any page, rebuilding them when an input changed:

- ``npm ci`` in ``lab/`` (the versions in ``lab/package-lock.json``) when ``node_modules`` is
  missing or older than the lockfile;
- ``python lab/export.py _build/lab``: the ONNX graphs, tokenizers and metadata of the bundled
  models, exported from their safetensors (and Python's reference values for the tests);
- ``node lab/build.mjs _build/lab/site``: the page's script and onnxruntime-web's WebAssembly.

The folder is added to ``html_extra_path``, so it is copied to ``_build/html/lab/`` and never to
``_static/`` (whose files Jupyter Book adds to every page). Only ``lab.html`` refers to it. That
page does not use plotly, so this extension also drops plotly.min.js from it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)
LAB_DOC = "lab"


def _newest(paths) -> float:
    newest = 0.0
    for p in paths:
        if p.is_dir():
            for q in p.rglob("*"):
                if q.is_file() and "node_modules" not in q.parts and "__pycache__" not in q.parts:
                    newest = max(newest, q.stat().st_mtime)
        elif p.exists():
            newest = max(newest, p.stat().st_mtime)
    return newest


def _run(cmd, cwd: Path, what: str) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ExtensionError(f"The lab: {what} failed ({' '.join(map(str, cmd))}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def build_lab(root: Path) -> Path:
    """Bring ``root/_build/lab`` up to date; returns the folder to copy into the site."""
    lab, out = root / "lab", root / "_build" / "lab"
    stamp = out / ".built"
    lock, installed = lab / "package-lock.json", lab / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        logger.info("the lab: npm ci")
        _run(["npm", "ci", "--no-audit", "--no-fund"], lab, "installing the npm packages")
    inputs = [lab, root / "helpers", root / "_ext" / "rs_lab.py"]
    if not stamp.exists() or stamp.stat().st_mtime < _newest(inputs) or stamp.stat().st_mtime < installed.stat().st_mtime:
        logger.info("the lab: exporting the bundled models to ONNX and bundling the page's script")
        _run([sys.executable, str(lab / "export.py"), str(out)], root, "the ONNX export")
        _run(["node", str(lab / "build.mjs"), str(out / "site")], lab, "the script bundle")
        stamp.write_text("built\n")
    return out / "site"


def _builder_inited(app) -> None:
    root = Path(app.srcdir)
    if not (root / f"{LAB_DOC}.md").exists() or app.builder.format != "html":
        return
    site = build_lab(root)
    if not (site / "lab" / "lab.js").exists():
        raise ExtensionError(f"The lab bundle is missing from {site}.")
    app.config.html_extra_path = list(app.config.html_extra_path) + [str(site)]


def _lab_page_only(app, pagename, templatename, context, doctree) -> None:
    if pagename != LAB_DOC:
        return
    files = context.get("script_files") or []
    context["script_files"] = [js for js in files if "plotly" not in str(getattr(js, "filename", js) or "")]


def setup(app):
    app.connect("builder-inited", _builder_inited)
    app.connect("html-page-context", _lab_page_only, priority=950)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
