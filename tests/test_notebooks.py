"""Chapters are stored clean, start the same way, and are all in the table of contents."""
import json
import re

import pytest
import yaml

import helpers
import nbtools
from nbtools import SETUP

from conftest import CHAPTERS, ROOT



def _nb(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    assert nbtools.problems(path) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_anatomy(path):
    cells = _nb(path)["cells"]
    title = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and re.match(r"# \d+ · ", title), "first cell: '# N · Title'"
    assert "You will be able to" in title and "Prerequisites" in title
    assert nbtools.setup_cell_problem({"cells": cells}) is None
    sources = ["".join(c["source"]) for c in cells]
    assert sum("exercise-start" in s for s in sources) >= 3, "at least three exercises"
    assert sum("solution-start" in s for s in sources) >= 3, "every exercise has a folded solution"
    assert any("assert " in s for s in sources if s), "a chapter checks its claims"
    assert not any(".show()" in s for s in sources), "use helpers.show(fig), not fig.show()"


def test_setup_cell_check_can_fail():
    """The anatomy check compares the whole cell: one changed character is caught."""
    import nbbuild

    cells = [{"cell_type": "markdown", "source": ["# 1 · T"]}, dict(nbbuild.setup())]
    assert "".join(cells[1]["source"]) == SETUP and nbtools.setup_cell_problem({"cells": cells}) is None
    cells[1]["source"] = SETUP.replace('"-q"', '"-qq"')
    assert "at line 4" in nbtools.setup_cell_problem({"cells": cells})
    assert "code cell" in nbtools.setup_cell_problem({"cells": cells[:1]})


def test_contributing_points_to_the_setup_cell_instead_of_copying_it():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert "tools/nbtools.py" in text and "SETUP" in text
    assert "importlib.util.find_spec" not in text, "CONTRIBUTING.md must not keep a second copy of the setup cell"


def test_authoring_tools_are_not_in_the_package():
    assert not (ROOT / "helpers" / "nbtools.py").exists()


def test_every_chapter_is_in_the_toc_and_nothing_else():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert sorted(files) == sorted(f"chapters/{p.stem}" for p in CHAPTERS)


def test_one_repository_setting():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"]
    assert url == helpers.REPOSITORY_URL
    assert f"git+{url}" in SETUP
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
