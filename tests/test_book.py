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
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems]
    (ROOT / "_build" / "pagecheck.txt").write_text(table + "\n\n" + "\n".join(problems) + "\n")
    with capsys.disabled():
        print("\n" + table)
    assert not problems, "\n".join(problems)
    checked = {r.page for r in reports}
    assert set(BACK_MATTER) <= checked, f"the page check missed {sorted(set(BACK_MATTER) - checked)}"
    chapters = [r for r in reports if r.page.startswith("chapters/")]
    assert chapters and all(r.figures >= 1 for r in chapters), "every chapter draws at least one figure"
    assert all(r.screenshot and os.path.getsize(r.screenshot) > 10_000 for r in reports)
    heavy = [r.page for r in reports if r.html_bytes > 2 * 1024 * 1024]
    assert not heavy, f"pages over 2 MB of HTML: {heavy}"
    explorer = next(r for r in reports if r.page == "chapters/01_residual_stream.html").probe
    assert explorer is not None, "the decomposition explorer is missing"
    assert "h0 = embed + pos, position 1" in explorer["title"], explorer
    assert explorer["traces_split"] == 3, explorer  # heatmap + the two sources of h0


def test_pages_load_only_what_they_use(built_book):
    """plotly.js only where a figure is; the theme's icon script cut down to the icons in use."""
    for page in built_book.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        if "_static" in page.parts:
            continue
        has_figure = 'class="rs-figure"' in html
        assert ("plotly.min.js" in html) == has_figure, f"{page.name}: plotly.js loaded {'without' if not has_figure else 'but missing, with'} a figure"
    icons = built_book / "_static" / "scripts" / "fontawesome.js"
    assert icons.stat().st_size < 200_000, f"fontawesome.js is {icons.stat().st_size} bytes: the icon subset was not made"


# --------------------------------------------------------------------------- claims, bibliography, glossary

BACK_MATTER = ("claims.html", "glossary.html", "references.html")


def claims_problems(rows, bib_keys, chapter_docs) -> list[str]:
    """What is wrong with the build's claims: a finding whose null passes, a missing null or
    reference key, a chapter that registers no finding."""
    from helpers.claims import falsifiability_problems, reference_problems

    problems = falsifiability_problems(rows) + reference_problems(rows, bib_keys)
    for doc in chapter_docs:
        if not any(r.get("document") == doc and r.get("kind") == "finding" for r in rows):
            problems.append(f"{doc}: registers no finding")
    return problems


def _bib_keys():
    from pybtex.database import parse_file

    return set(parse_file(str(ROOT / "references.bib")).entries)


def test_claims_check_fails_on_a_weakened_claim_and_a_chapter_without_findings():
    rows = [{"id": "ch1.a", "kind": "finding", "document": "chapters/01_x", "reference": ["elhage2021mathematical"],
             "null": {"what": "chance", "value": 0.1, "kind": "chance"},
             "test": {"kind": "above", "params": {"threshold": 0.5}, "why": "five times chance"}}]
    assert claims_problems(rows, _bib_keys(), ["chapters/01_x"]) == []
    rows[0]["test"]["params"]["threshold"] = 0.05  # weakened: chance (0.1) now passes too
    rows[0]["reference"] = ["nobody2099"]
    problems = claims_problems(rows, _bib_keys(), ["chapters/01_x", "chapters/02_y"])
    assert len(problems) == 3, problems
    assert "not evidence" in problems[0] and "nobody2099" in problems[1] and "02_y" in problems[2]


def test_build_writes_claims_json_and_every_finding_beats_its_null(built_book):
    import json

    path = ROOT / "_build" / "claims.json"
    assert path.exists(), "the build did not write _build/claims.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows, "no claims were recorded"
    for r in rows:
        assert {"id", "chapter", "statement", "value", "null", "passed", "reference", "kind"} <= set(r), r.get("id")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a claim id is registered twice"
    chapters = [f"chapters/{nb.stem}" for nb in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))]
    problems = claims_problems(rows, _bib_keys(), chapters)
    assert not problems, "\n".join(problems)
    page = (built_book / "claims.html").read_text(encoding="utf-8")
    assert page.count('<tr class="rs-claim-row') == len(rows), "the Claims page and claims.json disagree"
    for r in rows:
        anchor = r["url"].split("#", 1)[1]
        chapter_page = (built_book / r["url"].split("#", 1)[0]).read_text(encoding="utf-8")
        assert f'id="{anchor}"' in chapter_page, f"{r['id']}: its anchor is missing from {r['url']}"


def test_every_chapter_ends_with_its_references(built_book):
    for nb in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        html = (built_book / "chapters" / f"{nb.stem}.html").read_text(encoding="utf-8")
        assert '<section id="references">' in html, f"{nb.stem} has no References section"
        refs = html.split('<section id="references">', 1)[1]
        assert 'role="doc-biblioentry"' in refs, f"{nb.stem}: its References section lists no work"
        assert 'class="bibtex-citation"' in html, f"{nb.stem} cites nothing"


def test_glossary_and_references_pages_list_every_term_and_entry(built_book):
    glossary = (built_book / "glossary.html").read_text(encoding="utf-8")
    assert glossary.count('<dt id="term-') >= 40, "the glossary lost terms"
    references = (built_book / "references.html").read_text(encoding="utf-8")
    assert references.count('role="doc-biblioentry"') == len(_bib_keys()), "references.html must list every entry"


# --------------------------------------------------------------------------- what the static page hides

def _cell(source: str, outputs: list[tuple[str, str]]):
    from docutils import nodes

    cell = nodes.container(classes=["cell"])
    inp = nodes.container(classes=["cell_input"])
    inp += nodes.literal_block(source, source)
    cell += inp
    out = nodes.container(classes=["cell_output"])
    for kind, text in outputs:
        out += nodes.literal_block(text, text, classes=["output", kind])
    cell += out
    return cell


def test_static_book_hides_exercise_stub_outputs():
    import sys
    from docutils import nodes

    sys.path.insert(0, str(ROOT / "_ext"))
    import rs_book

    doc = nodes.section()
    doc += _cell("def f():\n    raise NotImplementedError\n\nhelpers.stream.check_f(f)", [("text_plain", "False")])
    doc += _cell("guess = ...\nffn.check_guess(guess)", [("stream", "measured: 3"), ("text_plain", "False")])
    doc += _cell("x = compute()\nx", [("text_plain", "False")])  # an ordinary False stays
    rs_book._hide_stub_outputs(None, doc)
    texts = [[n.astext() for n in c.findall(nodes.literal_block) if "output" in n.get("classes", [])]
             for c in doc.children]
    assert texts == [[], ["measured: 3"], ["False"]], texts


def test_built_pages_show_no_stub_output(built_book):
    for page in (built_book / "chapters").glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "not attempted" not in html, f"{page.name} shows an exercise reminder"
        assert "<pre><span></span>False</pre>" not in html, f"{page.name} shows a checker's False"
