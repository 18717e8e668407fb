"""The real Jupyter Book build (warnings are errors), then every page in headless Chromium."""
import os
import subprocess
import sys

import pytest

import pagecheck
from conftest import ROOT

HTML = ROOT / "_build" / "html"

EXPLORER_PROBE = """
const gd = Array.from(document.querySelectorAll('.rs-figure .js-plotly-plot'))
  .find(g => g.data.some(t => t.type === 'heatmap') && g.layout.updatemenus);
if (!gd) return null;
const before = gd.data.length;
gd.emit('plotly_click', {points: [{data: {type: 'heatmap'}, pointIndex: [0, 1]}]});
const title = gd.layout.annotations.map(a => a.text).join(' | ');
gd.emit('plotly_buttonclicked', {button: {label: 'split by source'}});
return {before: before, title: title, traces_split: gd.data.length};
"""


@pytest.fixture(scope="module")
def built_book():
    env = dict(os.environ, RS_BOOK_BUILD="1", HF_HUB_OFFLINE="1")
    jb = os.path.join(os.path.dirname(sys.executable), "jupyter-book")
    result = subprocess.run([jb, "build", str(ROOT), "-W", "--keep-going"], capture_output=True, text=True,
                            env=env, timeout=3600)
    assert result.returncode == 0, (result.stdout[-6000:] + "\n" + result.stderr[-6000:])
    return HTML


def test_served_plotly_js_matches_the_python_package():
    import plotly.offline

    head = (ROOT / "_static" / "plotly.min.js").read_text(encoding="utf-8")[:300]
    assert f"v{plotly.offline.get_plotlyjs_version()}" in head, head


def test_show_refuses_traces_the_bundle_lacks():
    import plotly.graph_objects as go
    import helpers

    with pytest.raises(ValueError, match="not in the book's plotly.js bundle"):
        helpers.show(go.Figure(go.Scatter3d(x=[1], y=[1], z=[1])))


def test_book_builds_with_every_chapter(built_book):
    for nb in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        page = built_book / "chapters" / f"{nb.stem}.html"
        assert page.exists(), f"{page} was not built"
        html = page.read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" not in html, f"{page.name} shows an error output"
        assert "{glue" not in html, f"{page.name} has an unresolved glue role"
        assert "rs-figure" in html, f"{page.name} has no figure"


def test_pages_in_headless_chromium(built_book, capsys):
    shots = ROOT / "_build" / "screenshots"
    probes = {"chapters/01_residual_stream.html": EXPLORER_PROBE}
    reports = pagecheck.check_site(built_book, screenshot_dir=shots, probes=probes)
    table = pagecheck.format_reports(reports)
    (ROOT / "_build" / "pagecheck.txt").write_text(table + "\n")
    with capsys.disabled():
        print("\n" + table)
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems]
    assert not problems, "\n".join(problems)
    chapters = [r for r in reports if r.page.startswith("chapters/")]
    assert chapters and all(r.figures >= 1 for r in chapters), "every chapter draws at least one figure"
    assert all(r.screenshot and os.path.getsize(r.screenshot) > 10_000 for r in reports)
    heavy = [r.page for r in reports if r.html_bytes > 2 * 1024 * 1024]
    assert not heavy, f"pages over 2 MB of HTML: {heavy}"
    explorer = next(r for r in reports if r.page == "chapters/01_residual_stream.html").probe
    assert explorer is not None, "the decomposition explorer is missing"
    assert "h0 = embed + pos, position 1" in explorer["title"], explorer
    assert explorer["traces_split"] == 3, explorer  # heatmap + the two sources of h0
