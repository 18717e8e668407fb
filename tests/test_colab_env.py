"""Colab: the book's wheel installed the way the setup cell installs it, into an environment
pre-seeded with Colab's own versions; chapters 1 and 5 from an empty directory; every live
widget the chapters display built there with Colab's ipywidgets 7. Also the unit tests of
helpers.env's Colab widget-manager switch.

The slow test records what the install changed and how long it took in
``.cache/colab_env.json`` (the README's "In Colab" section quotes it).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types

import pytest

from conftest import CHAPTERS, ROOT

#: What Colab has before the book's setup cell runs (the packages the book touches).
#: torch comes from the wheel on this machine's disk (no CUDA download).
COLAB_SEED = [
    "torch==2.13.0", "numpy==2.0.2", "transformers==4.57.1", "huggingface-hub==0.36.0", "tokenizers==0.22.1",
    "safetensors==0.6.2", "plotly==5.24.1", "ipywidgets==7.7.1", "pandas==2.2.2", "tqdm==4.67.1",
    "accelerate==1.11.0", "ipykernel==6.17.1", "nbclient==0.10.2", "nbformat==5.10.4",
]
#: Chapters the test executes, and the factories that build each live widget a chapter shows.
EXECUTED = ("01_", "05_")
WIDGET_FACTORY = re.compile(r"show_widget\(\s*lambda:\s*([a-z_]+\.[a-z_]+)\(")

WIDGETS = r"""
import ipywidgets, torch
import helpers
from helpers import env, ffn, lens, stream

torch.set_grad_enabled(False)
model = helpers.load_model("rs-gpt2-4l", device="cpu")
prompt = "The Eiffel Tower is located in"
_, cache = model.run_with_cache(prompt)
sources, labels = stream.sublayer_sources(cache, model.cfg.n_layers)
sample = ffn.labelled_sample(model, n_sequences=4)
stats = ffn.collect_ffn_stats(model, sample["tokens"], sample["lengths"], k=4, key_moment=False)
made = {
    "stream.decomposition_widget": lambda: stream.decomposition_widget(
        sources.cpu().numpy(), labels, model.to_str_tokens(prompt)),
    "lens.block_budget_widget": lambda: lens.block_budget_widget(model, prompt),
    "ffn.neuron_browser_widget": lambda: ffn.neuron_browser_widget(model, stats, sample["tokens"]),
}
for name, make in made.items():
    w = make()
    assert isinstance(w, ipywidgets.Widget), (name, type(w))
    print("WIDGET", name, type(w).__name__, "custom" if env.needs_custom_widget_manager(w) else "builtin")
print("IPYWIDGETS", ipywidgets.__version__)
"""

RUNNER = r"""
import importlib.util, sys, time
import nbformat
from nbclient import NotebookClient
spec = importlib.util.find_spec("helpers")
assert spec is not None and sys.prefix in spec.origin, f"helpers imported from {spec and spec.origin}"
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    print("EXECUTED", path, len(nb.cells), f"{time.perf_counter() - start:.1f}")
"""


def widget_factories_in_chapters() -> set[str]:
    import nbformat

    found = set()
    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found.update(WIDGET_FACTORY.findall(cell.source))
    return found


def test_every_displayed_widget_factory_is_covered():
    """The widget check builds every factory a chapter passes to show_widget (add new ones there)."""
    covered = set(re.findall(r'^\s*"([a-z_]+\.[a-z_]+)":', WIDGETS, re.MULTILINE))
    in_chapters = widget_factories_in_chapters()
    assert in_chapters, "no show_widget(lambda: module.factory(...)) call found: has the pattern changed?"
    assert in_chapters <= covered, f"widgets shown by chapters but not built by this test: {in_chapters - covered}"


def test_widgets_build_with_the_pinned_ipywidgets(tmp_path):
    """The same factories with the pinned ipywidgets 8 (the Colab test covers 7.7.1)."""
    run = subprocess.run([sys.executable, "-c", WIDGETS], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("WIDGET ") == 3
    assert "IPYWIDGETS 8." in run.stdout


# ---- helpers.env: Colab's custom widget manager, switched on where a widget needs it


@pytest.fixture
def fake_colab(monkeypatch):
    """A stand-in for google.colab.output that records calls."""
    from helpers import env

    calls = []
    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("enabled")
    colab.output, google.colab = output, colab
    for name, module in (("google", google), ("google.colab", colab), ("google.colab.output", output)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(env, "_colab_widgets_enabled", False)
    return calls


def test_custom_widget_manager_is_enabled_once_in_colab(fake_colab):
    import ipywidgets

    from helpers import env

    assert env.in_colab()
    slider = ipywidgets.IntSlider()
    assert env.enable_colab_widgets(slider) is True  # ipywidgets 8 is pinned: every widget needs it
    assert env.enable_colab_widgets(slider) is True
    assert fake_colab == ["enabled"]


def test_ipywidgets7_builtin_controls_do_not_need_it_but_plotly_widgets_do(fake_colab, monkeypatch):
    import ipywidgets
    import plotly.graph_objects as go

    from helpers import env

    monkeypatch.setattr(ipywidgets, "__version__", "7.7.1")
    plain = ipywidgets.VBox([ipywidgets.IntSlider(), ipywidgets.HBox([ipywidgets.Dropdown(options=[1])])])
    assert not env.needs_custom_widget_manager(plain)
    assert env.enable_colab_widgets(plain) is False and fake_colab == []
    with_figure = ipywidgets.VBox([ipywidgets.IntSlider(), go.FigureWidget()])
    fake_colab.clear()  # plotly >= 6 itself switches the manager on when it sees Colab
    assert env.needs_custom_widget_manager(with_figure)
    assert env.enable_colab_widgets(with_figure) is True and fake_colab == ["enabled"]


def test_show_widget_switches_the_manager_on_before_displaying(fake_colab, monkeypatch):
    import ipywidgets

    import helpers

    monkeypatch.delenv("RS_BOOK_BUILD", raising=False)
    helpers.show_widget(lambda: ipywidgets.IntSlider(), "A slider")
    assert fake_colab == ["enabled"]


def test_nothing_happens_outside_colab(monkeypatch):
    import ipywidgets

    from helpers import env

    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(env, "_colab_widgets_enabled", False)
    assert not env.in_colab()
    assert env.enable_colab_widgets(ipywidgets.IntSlider()) is False


# ---- the Colab-like install (slow: builds a venv, installs from the package index)


def _pip_list(python) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                         check=True).stdout
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out)}


def _seeded_venv(env) -> "os.PathLike":
    """The Colab-seeded environment, built once per seed list under .cache/ (minutes the first
    time: torch from disk, the rest from the package index) and reused by later runs."""
    import hashlib

    key = hashlib.sha256(" ".join(COLAB_SEED + [sys.version]).encode()).hexdigest()[:12]
    venv = ROOT / ".cache" / "colab-seed" / key
    stamp = venv / "seeded.ok"
    if stamp.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    seed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q"] + COLAB_SEED,
                          capture_output=True, text=True, env=env)
    assert seed.returncode == 0, seed.stderr[-3000:]
    stamp.write_text(" ".join(COLAB_SEED))
    return venv


@pytest.mark.slow
def test_wheel_in_a_colab_like_environment(tmp_path):
    t0 = time.monotonic()
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("*.whl"))
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    venv = tmp_path / "colab"
    # a hard-linked copy of the seeded environment: pip replaces files, never edits them,
    # so installing into the copy leaves the cached seed as it was
    subprocess.run(["cp", "-al", str(_seeded_venv(env)), str(venv)], check=True)
    python = venv / "bin" / "python"
    before = _pip_list(python)
    assert before["ipywidgets"] == "7.7.1" and before["transformers"].startswith("4.57")

    # the setup cell: a plain `pip install`, which upgrades only what the wheel's ranges require
    t_install = time.monotonic()
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True, env=env)
    install_s = time.monotonic() - t_install
    assert install.returncode == 0, install.stderr[-3000:]
    after = _pip_list(python)
    changed = {k: [before[k], after[k]] for k in before if k in after and before[k] != after[k]}
    added = {k: v for k, v in after.items() if k not in before}
    record = {"seed": COLAB_SEED, "install_s": round(install_s, 1), "changed": changed,
              "added": dict(sorted(added.items())), "n_added": len(added)}

    # Colab's ipywidgets, torch and numpy are kept: the book's ranges allow them
    assert after["ipywidgets"] == "7.7.1", changed.get("ipywidgets")
    assert after["torch"] == before["torch"] and after["numpy"] == before["numpy"]
    assert "plotly" not in changed

    # chapters 1 and 5 from an empty directory, with the installed package only
    workdir = tmp_path / "reader"
    workdir.mkdir()
    chapters = [p for p in CHAPTERS if p.name.startswith(EXECUTED)]
    for chapter in chapters:
        shutil.copy(chapter, workdir / chapter.name)
    run_env = dict(env, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([str(python), "-c", RUNNER] + [c.name for c in chapters], cwd=workdir, env=run_env,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record["chapters_s"] = {line.split()[1]: float(line.split()[3])
                            for line in run.stdout.splitlines() if line.startswith("EXECUTED")}
    assert len(record["chapters_s"]) == len(chapters)

    # every widget a chapter displays, built with Colab's ipywidgets 7 and plotly 5
    widgets = subprocess.run([str(python), "-c", WIDGETS], cwd=workdir, env=run_env, capture_output=True,
                             text=True, timeout=600)
    assert widgets.returncode == 0, widgets.stdout[-2000:] + widgets.stderr[-3000:]
    assert "IPYWIDGETS 7.7.1" in widgets.stdout
    record["widgets"] = [line.split(None, 1)[1] for line in widgets.stdout.splitlines() if line.startswith("WIDGET ")]
    assert len(record["widgets"]) == 3
    record["total_s"] = round(time.monotonic() - t0, 1)
    out = ROOT / ".cache" / "colab_env.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


def test_anywidget_is_what_plotly_figure_widgets_are_built_on():
    """Why pyproject declares anywidget though no helper imports it: with plotly >= 6,
    go.FigureWidget (used by stream.decomposition_widget) is an anywidget widget."""
    import anywidget
    import plotly
    import plotly.graph_objects as go

    if int(plotly.__version__.split(".")[0]) < 6:
        pytest.skip("plotly 5 builds FigureWidget on ipywidgets alone")
    assert issubclass(go.FigureWidget, anywidget.AnyWidget)
