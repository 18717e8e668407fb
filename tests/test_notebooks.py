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


UNNUMBERED = {"Exercises", "Summary", "References", "On GPT-2 small"}


def anatomy_problems(cells) -> list[str]:
    """What a chapter's opener and section headings lack, against the book's one anatomy."""
    out = []
    title = "".join(cells[0]["source"]) if cells else ""
    if not cells or cells[0]["cell_type"] != "markdown" or not re.match(r"# \d+ · ", title):
        out.append("first cell must start '# N · Title'")
    for needle in ("**Thesis.**", "**You will be able to:**\n\n- ", "**Prerequisites.**"):
        if needle not in title:
            out.append(f"opener lacks {needle.strip()!r}")
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for line in "".join(cell["source"]).split("\n"):
            if line.startswith("## ") and line[3:].strip() not in UNNUMBERED and not re.match(r"## \d+\. \S", line):
                out.append(f"section heading {line!r} is not numbered '## N. Title'")
    return out


def test_anatomy_check_can_fail():
    good = [{"cell_type": "markdown", "source": ["# 1 · T\n\n**Thesis.** x\n\n**You will be able to:**\n\n- a\n\n"
                                                 "**Prerequisites.** none\n\n## 1. First\n\n## Summary"]}]
    assert anatomy_problems(good) == []
    bad = [{"cell_type": "markdown", "source": ["# 1 · T\n\n**You will be able to**\n- a\n\n**Prerequisites:** none\n\n## 1 · First"]}]
    problems = " | ".join(anatomy_problems(bad))
    for expected in ("Thesis", "You will be able to:", "Prerequisites.", "not numbered"):
        assert expected in problems, problems


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_anatomy(path):
    cells = _nb(path)["cells"]
    assert anatomy_problems(cells) == []
    assert nbtools.setup_cell_problem({"cells": cells}) is None
    sources = ["".join(c["source"]) for c in cells]
    assert sum("exercise-start" in s for s in sources) >= 4, "at least four exercises"
    assert sum("solution-start" in s for s in sources) >= 4, "every exercise has a folded solution"
    assert any("helpers.claim(" in s for s in sources), "a chapter registers its findings with helpers.claim"
    assert not any(re.search(r"^\s*assert (?!helpers|\w+\.check_|check_)", s, re.M) for s in sources
                   if "solution-start" not in s), "findings go through helpers.claim / helpers.identity, not bare asserts"
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
    assert sorted(f for f in files if f.startswith("chapters/")) == sorted(f"chapters/{p.stem}" for p in CHAPTERS)
    assert {"lab", "claims", "glossary", "references"} <= set(files), "the lab and the back matter are in the book"


def test_one_repository_setting():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"]
    assert url == helpers.REPOSITORY_URL
    assert f"git+{url}" in SETUP
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
