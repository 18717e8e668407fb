"""Solutions stay hidden until the reader asks (Colab form, Jupyter hidden source), and
exercise stubs show no output in the static book: tools/nbmeta.py and its hygiene check."""
import copy
import json
import subprocess
import sys

import pytest

from conftest import CHAPTERS, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import nbmeta  # noqa: E402

import nbtools


def md(text):
    return {"cell_type": "markdown", "id": f"m{abs(hash(text)) % 10**8}", "metadata": {}, "source": text}


def code(text, cid, **meta):
    return {"cell_type": "code", "id": cid, "metadata": dict(meta), "source": text, "outputs": [],
            "execution_count": None}


def notebook():
    cells = [
        md("# A chapter"),
        code("x = 1", "c-setup"),
        md("```{exercise-start} ★ Add\n:label: ex-add\n```\nWrite `add`."),
        code("def add(a, b):\n    # YOUR CODE HERE\n    raise NotImplementedError\n", "c-stub", tags=["keep-me"]),
        md("```{exercise-end}\n```"),
        md("```{solution-start} ex-add\n:class: dropdown\n```"),
        code("def add(a, b):\n    return a + b\n", "c-sol"),
        code("print('why it works')", "c-sol-mid"),
        code("assert add(1, 2) == 3", "c-sol2"),
        md("```{solution-end}\n```"),
        code("print(add(2, 2))", "c-after"),
    ]
    return {"cells": cells, "metadata": {"kernelspec": nbtools.KERNELSPEC, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_classify_finds_stubs_and_solutions():
    assert nbmeta.classify(notebook()) == ([6, 7, 8], [3])


def test_check_fails_without_metadata_and_passes_after_apply():
    nb = notebook()
    found = nbmeta.problems(nb)
    assert any("cell 6 (solution)" in p and "cellView" in p for p in found)
    assert any("cell 8 (solution)" in p and "source_hidden" in p for p in found)
    assert any("cell 3 (exercise stub)" in p for p in found)
    assert nbmeta.apply(nb) == 4
    assert nbmeta.problems(nb) == []
    sol = nb["cells"][6]
    assert sol["source"].startswith("# @title Solution")
    assert sol["metadata"] == {"cellView": "form", "jupyter": {"source_hidden": True}}
    assert nb["cells"][3]["metadata"]["tags"] == ["keep-me", "remove-output"]
    # nothing outside exercises and solutions changes; cell ids are kept
    for i in (0, 1, 2, 4, 5, 9, 10):
        assert nb["cells"][i] == notebook()["cells"][i]
    assert [c["id"] for c in nb["cells"]] == [c["id"] for c in notebook()["cells"]]


def test_apply_is_idempotent():
    nb = notebook()
    nbmeta.apply(nb)
    once = copy.deepcopy(nb)
    assert nbmeta.apply(nb) == 0
    assert nb == once


def test_each_missing_piece_is_named():
    nb = notebook()
    nbmeta.apply(nb)
    for breaks, expect in [
        (lambda n: n["cells"][6]["metadata"].pop("cellView"), "cellView"),
        (lambda n: n["cells"][8]["metadata"]["jupyter"].update(source_hidden=False), "source_hidden"),
        (lambda n: n["cells"][6].update(source="def add(a, b):\n    return a + b\n"), "@title"),
        (lambda n: n["cells"][3]["metadata"].update(tags=[]), "remove-output"),
    ]:
        broken = copy.deepcopy(nb)
        breaks(broken)
        assert any(expect in p for p in nbmeta.problems(broken)), expect


def _with_prose():
    nb = notebook()
    nb["cells"].insert(7, md("Why it works, in words: $1 + 2 = 3$."))
    nb["cells"][5] = md("```{solution-start} ex-add\n:class: dropdown\n```\nThe answer is 3.")
    nb["cells"][2] = md("```{exercise-start} ★ Add\n:label: ex-add\n```\nWrite `add`; it returns 3 for (1, 2).")
    return nb


def test_solution_prose_in_a_markdown_cell_is_reported():
    """Colab cannot hide a text cell: prose inside a solution, in its own cell or after the start
    marker, is a problem; prose outside solutions (the exercise's statement) is not."""
    nb = _with_prose()
    assert nbmeta.solution_prose(nb) == [5, 7]
    found = [p for p in nbmeta.problems(nb) if "solution prose" in p]
    assert [p.split(" (")[0] for p in found] == ["cell 5", "cell 7"]
    assert nbmeta.solution_prose(notebook()) == []


def test_apply_folds_solution_prose_into_hidden_cells_that_explain_it(tmp_path):
    """apply moves the prose into hidden code cells that call helpers.explain (the book renders
    their Markdown output as MyST; Colab and Jupyter hide their code), keeps the marker cells'
    directives intact, and the notebook stays clean for tools/nbtools.py."""
    nb = _with_prose()
    nbmeta.apply(nb)
    assert nbmeta.problems(nb) == []
    srcs = [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]]
    assert srcs[5] == "```{solution-start} ex-add\n:class: dropdown\n```"
    why = [i for i, s in enumerate(srcs) if "helpers.explain" in s]
    assert len(why) == 2 and why[0] == 6
    for i in why:
        cell = nb["cells"][i]
        assert cell["cell_type"] == "code" and cell["metadata"]["cellView"] == "form"
        assert cell["metadata"]["tags"] == ["remove-input"]
        assert cell["metadata"]["mystnb"] == {"markdown_format": "myst"}
    assert 'r"""\nThe answer is 3.\n"""' in srcs[6] and "$1 + 2 = 3$" in srcs[why[1]]
    namespace = {"helpers": __import__("helpers")}
    for i in why:  # the folded cells run and show the text
        exec(srcs[i], namespace)
    once = copy.deepcopy(nb)
    assert nbmeta.apply(nb) == 0 and nb == once
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert nbtools.problems(path) == []
    bad = _with_prose()
    bad["cells"][7] = md('He said """no""".')
    with pytest.raises(ValueError, match="triple quotes"):
        nbmeta.apply(bad)


def test_unbalanced_markers_are_refused():
    nb = notebook()
    del nb["cells"][9]  # solution-end
    with pytest.raises(ValueError, match="solution-start has no solution-end"):
        nbmeta.classify(nb)
    nb = notebook()
    del nb["cells"][2]  # exercise-start
    with pytest.raises(ValueError, match="exercise-end without"):
        nbmeta.classify(nb)


def test_tool_on_a_chapter_copy_and_the_clean_notebook_check_agree(tmp_path):
    """On a copy of a real chapter: check fails, apply fixes it, a second apply changes
    nothing, tools/nbtools.py accepts (and its strip keeps) the new metadata."""
    src = next(p for p in CHAPTERS if p.name.startswith("01_"))
    path = tmp_path / src.name
    path.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    tool = [sys.executable, str(ROOT / "tools" / "nbmeta.py")]
    before = json.loads(path.read_text(encoding="utf-8"))
    if not nbmeta.problems(before):
        pytest.skip("the chapter already carries the metadata (the tool has been run on it)")
    assert subprocess.run(tool + ["check", str(path)], capture_output=True).returncode == 1
    subprocess.run(tool + ["apply", str(path)], check=True, capture_output=True)
    applied = path.read_text(encoding="utf-8")
    assert subprocess.run(tool + ["check", str(path)], capture_output=True).returncode == 0
    subprocess.run(tool + ["apply", str(path)], check=True, capture_output=True)
    assert path.read_text(encoding="utf-8") == applied
    assert nbtools.problems(path) == []
    nbtools.strip(path)
    assert path.read_text(encoding="utf-8") == applied


def test_clean_notebook_check_still_rejects_other_metadata(tmp_path):
    nb = notebook()
    nb["cells"][1]["metadata"] = {"collapsed": True}
    nb["cells"][6]["metadata"] = {"cellView": "form", "jupyter": {"outputs_hidden": True}}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    found = nbtools.problems(path)
    assert any("cell 1" in p and "collapsed" in p for p in found)
    assert any("cell 6" in p and "jupyter" in p for p in found)
    nbtools.strip(path)
    stripped = json.loads(path.read_text())
    assert stripped["cells"][1]["metadata"] == {} and stripped["cells"][6]["metadata"] == {"cellView": "form"}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_solution_and_stub_cell_carries_its_metadata(chapter):
    """Fails until `tools/nbmeta.py apply chapters/*.ipynb` has been run (the lead does this)."""
    found = nbmeta.problems(json.loads(chapter.read_text(encoding="utf-8")))
    assert not found, f"{chapter.name}: run `.venv/bin/python tools/nbmeta.py apply {chapter.relative_to(ROOT)}`:\n" + \
        "\n".join(found)


def test_a_measuring_cell_inside_an_exercise_keeps_its_output():
    """A predict-then-measure exercise: the prediction stub hides its output, the measurement shows."""
    nb = notebook()
    nb["cells"].insert(4, code("predicted = ...   # YOUR PREDICTION\n", "c-pred"))
    nb["cells"].insert(5, code("measured = 2 + 2\nprint(measured)\ncheck_prediction(predicted);\n", "c-measure",
                               tags=["remove-output"]))
    assert nbmeta.classify(nb)[1] == [3, 4] and nbmeta.measuring_cells(nb) == [5]
    assert any("cell 5 (measurement" in p for p in nbmeta.problems(nb))
    nbmeta.apply(nb)
    assert nb["cells"][4]["metadata"]["tags"] == ["remove-output"]
    assert nb["cells"][5]["metadata"]["tags"] == []
    assert nbmeta.problems(nb) == []
    nb["cells"][5]["metadata"]["tags"].append("remove-output")  # hiding it again is named
    assert any("measurement" in p for p in nbmeta.problems(nb))
