"""Every chapter runs to its end on a small GPT-2-shaped stand-in with GPT-2's real tokenizer.

The stand-in (tools/standin.py, size "small": 4 blocks, 4 heads, d_model = 128,
context 1024, GPT-2's 50,257-token vocabulary, random weights) is what
``MODEL_NAME = "gpt2"`` gives a reader, minus the trained weights: every
assumption about a tokenization, a width, a depth or a head count breaks on it
as it would on GPT-2. Findings about the bundled organisms do not hold on random
weights; the claims API reports them ("measured ... on ...") instead of stopping
the chapter, and this test checks that those reports appear.
"""
import re
import sys

import pytest

from conftest import CHAPTERS, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import standin  # noqa: E402

#: Literal claim ids in a chapter's source: claims.claim("ch4.fact-site", ...) or claim("ch4...", ...).
CLAIM_ID = re.compile(r"""\bclaim\(\s*["']([a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*)["']""")
#: A claim measured on a bundled organism (anything but measured_on=None).
ON_ORGANISM = re.compile(r"measured_on\s*=\s*(?!None\b)\S")


def chapter_source(path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def small_standin():
    return standin.build("small")


def test_standin_has_gpt2_tokenizer_and_shape(small_standin):
    import helpers

    model = helpers.load_model(str(small_standin), device="cpu")
    assert model.cfg.d_vocab == standin.GPT2_VOCAB == 50257
    assert model.cfg.n_ctx == 1024
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model) == (4, 4, 128)
    assert model.to_single_token(" Paris") == standin.PARIS_ID == 6342
    # GPT-2 splits " Eiffel" into three tokens: chapters must not assume one
    assert model.to_str_tokens(" Eiffel", prepend_bos=False) == [" E", "iff", "el"]


def test_substitution_changes_only_the_model_name():
    source = 'x = 1\nMODEL_NAME = "rs-gpt2-4l"  # "gpt2" loads GPT-2\nlm = helpers.load_model("rs-gpt2-4l")\n'
    new, n = standin.substitute_model(source, "/tmp/standin")
    assert n == 1
    assert new == 'x = 1\nMODEL_NAME = "/tmp/standin"  # "gpt2" loads GPT-2\nlm = helpers.load_model("rs-gpt2-4l")\n'


def test_finding_lines_are_the_claims_api_lines_only():
    text = ("measured 0.213 on /x/gpt2-standin-small; on rs-gpt2-4l this holds with exceeds the null by ≥ 0.05 "
            "(null: block 0's share = 0.2) · ch4.shallow-deeper\n"
            "measured at block 8: 1.271·d ± 0.037 (standard errors over 6 seeds)\n"
            "✔ finding · ch4.other: 0.5, > 0.1 (null: chance = 0)\n")
    found = standin.FINDING_LINE.findall(text)
    assert len(found) == 1 and found[0].endswith("· ch4.shallow-deeper")


def test_chapter_without_model_line_is_refused(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="MODEL_NAME"):
        standin.prepare(path, tmp_path)


def test_harness_reports_first_exception_and_findings(tmp_path, small_standin):
    """The harness must see a failing cell (its index and exception) and the "measured" lines."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = [
        nbformat.v4.new_code_cell('MODEL_NAME = "rs-gpt2-4l"\nimport helpers\n'
                                  'from helpers import claims\nclaims.begin_chapter("ch9", MODEL_NAME)'),
        nbformat.v4.new_code_cell('claims.claim("ch9.demo", "The demo value is above one half.", 0.9, '
                                  'claims.above(0.5, why="half is the chance level here"), '
                                  'claims.Null("a coin", 0.4, "chance"), ref="elhage2021mathematical", '
                                  'measured_on="rs-gpt2-4l")'),
        nbformat.v4.new_code_cell("raise KeyError('boom')"),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    path = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, path)
    report = standin.run_chapter(path, small_standin, timeout_s=300, keep=tmp_path / "out.ipynb")
    assert not report["ok"]
    assert report["first_error"]["cell_index"] == 2 and report["first_error"]["ename"] == "KeyError"
    assert report["executed_to"] == 2
    assert len(report["findings"]) == 1 and report["findings"][0].startswith("measured 0.9 on ")
    assert "ch9.demo" in report["findings"][0]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_to_the_end_on_the_gpt2_standin(chapter, small_standin):
    report = standin.run_chapter(chapter, small_standin, timeout_s=900, memory_cap_mib=6 * 1024)
    if report["first_error"]:
        e = report["first_error"]
        pytest.fail(f"{chapter.name} stopped at cell {e['cell_index']} (id {e['cell_id']}): "
                    f"{e['ename']}: {e['evalue']}\n  cell begins: {e['source_head'][:200]!r}\n"
                    f"  executed notebook: {report['output']}")
    assert report["ok"], f"{chapter.name}: {report['error']}"
    source = chapter_source(chapter)
    output = standin._text_outputs(__import__("nbformat").read(report["output"], as_version=4))
    missing = [cid for cid in CLAIM_ID.findall(source) if not re.search(rf"· {re.escape(cid)}\b", output)]
    assert not missing, f"{chapter.name}: claims in the source that printed nothing on the stand-in: {missing}"
    if ON_ORGANISM.search(source):
        assert report["findings"], (f"{chapter.name} records findings measured on a bundled organism, "
                                    "but printed no 'measured ... on ...' line on the stand-in")
        assert all(str(small_standin) in line for line in report["findings"])
