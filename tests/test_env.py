import time

import pytest
import torch

import helpers


def test_device_is_automatic_and_valid():
    dev = helpers.get_device()
    assert dev.type in ("cuda", "mps", "cpu")
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    assert helpers.get_device("cpu").type == "cpu"


def test_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        helpers.get_device("tpu")


def test_seed_makes_runs_repeat():
    helpers.set_seed(3)
    a = torch.randn(5)
    helpers.set_seed(3)
    b = torch.randn(5)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="non-negative int"):
        helpers.set_seed(-1)


def test_offline_hub_probe_answers_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert helpers.hub_reachable() is False
    assert time.monotonic() - start < 1.0


def test_hub_probe_without_offline_flag_is_bounded(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.monotonic()
    helpers.hub_reachable(timeout=2.0)  # whatever the answer, it comes quickly
    assert time.monotonic() - start < 4.0


def test_glue_rejects_bad_names_and_returns_value():
    assert helpers.glue("a_number", 3) == 3
    with pytest.raises(ValueError, match="glue names"):
        helpers.glue("bad name!", 1)


def test_show_rejects_non_figures():
    with pytest.raises(TypeError, match="plotly Figure"):
        helpers.show({"data": []})


def test_book_build_renderer_emits_div_without_plotly_library(monkeypatch):
    import plotly.graph_objects as go

    from helpers.plotting import _book_bundle

    bundle = _book_bundle(go.Figure(go.Bar(x=[1], y=[2])), post_script="console.log('{plot_id}')")
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html and "rs-figure" in html
    assert "cdn" not in html.lower()
    assert len(html) < 20_000, "plotly.js must not be inlined into a figure"
