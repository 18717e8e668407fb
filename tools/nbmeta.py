"""Give exercise and solution cells the metadata that self-study needs (idempotent).

    .venv/bin/python tools/nbmeta.py apply chapters/*.ipynb    # rewrite in place
    .venv/bin/python tools/nbmeta.py check chapters/*.ipynb    # list cells that lack it (exit 1)

A chapter's exercise is a markdown cell opening ```` ```{exercise-start} ````,
the reader's stub (code cells), and a markdown cell ```` ```{exercise-end} ````;
its solution follows between ```` ```{solution-start} ```` and
```` ```{solution-end} ````. The static book folds the solution; a notebook
opened in Colab or Jupyter would show it in plain view under the exercise.
This tool gives

* every solution code cell a first line ``# @title Solution (click to show the code)``
  and ``"cellView": "form"`` (Colab shows the title and hides the code until the
  reader opens the cell), and ``"jupyter": {"source_hidden": true}`` (JupyterLab
  and Notebook 7 collapse the source); the code still runs with the rest of the
  chapter;
* every exercise stub code cell (one with a placeholder: a body that raises
  ``NotImplementedError``, or a prediction left as ``= ...``) the tag
  ``remove-output``, so the static book shows no "not attempted yet" output
  under a stub. Other code cells inside an exercise measure what the reader
  predicted; they keep their output (the reader must see the measurement the
  prediction is graded against), and the tag is taken off them.

Running it twice changes nothing the second time. Only those cells and those
keys are touched; cell ids, other tags and every other cell stay as they are.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TITLE = "# @title Solution (click to show the code)"
TITLE_LINE = re.compile(r"^#\s*@title\b")
FORM = {"cellView": "form"}
HIDDEN = {"jupyter": {"source_hidden": True}}
STUB_TAG = "remove-output"

_MARK = re.compile(r"```+\s*\{(exercise|solution)-(start|end)\}")
# a placeholder the reader replaces: a function body that raises, or a prediction left as ``...``
_PLACEHOLDER = re.compile(r"^\s*raise NotImplementedError\b|^\s*\w+\s*=\s*\.\.\.(\s|#|$)", re.M)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def classify(nb: dict) -> tuple[list[int], list[int]]:
    """Indices of (solution code cells, exercise stub code cells) in a notebook dict.

    A stub is a code cell inside an exercise that holds a placeholder; see :func:`measuring_cells`
    for the others.

    Raises ValueError for a start without its end or an end without a start, naming the cell.
    """
    solutions, stubs = [], []
    inside = None  # "exercise" or "solution" while between a start and its end
    opened_at = None
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            for mark in _MARK.finditer(_source(cell)):  # in the order they appear
                kind, edge = mark.groups()
                if edge == "start":
                    if inside is not None:
                        raise ValueError(f"cell {i}: {kind}-start inside the {inside} opened at cell {opened_at}")
                    inside, opened_at = kind, i
                else:
                    if inside != kind:
                        raise ValueError(f"cell {i}: {kind}-end without a matching {kind}-start")
                    inside = None
            continue
        if cell["cell_type"] == "code" and inside == "solution":
            solutions.append(i)
        elif cell["cell_type"] == "code" and inside == "exercise" and _PLACEHOLDER.search(_source(cell)):
            stubs.append(i)
    if inside is not None:
        raise ValueError(f"cell {opened_at}: {inside}-start has no {inside}-end")
    return solutions, stubs


def measuring_cells(nb: dict) -> list[int]:
    """Indices of code cells inside an exercise that hold no placeholder: they measure what the
    reader predicted, and their output must show."""
    solutions, stubs = classify(nb)
    inside, found = None, []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            for mark in _MARK.finditer(_source(cell)):
                inside = mark.group(1) if mark.group(2) == "start" else None
        elif inside == "exercise" and i not in stubs:
            found.append(i)
    return found


def _set_source(cell, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


PROSE_TITLE = "# @title Solution, in words (run the cell to show it)"
PROSE_META = {"tags": ["remove-input"], "mystnb": {"markdown_format": "myst"}}


def _split_marker_cell(src: str) -> tuple[str, str, bool]:
    """(the marker directive(s) alone, the prose beside them, whether the prose comes first)."""
    lines = src.splitlines(keepends=True)
    keep, prose, first_marker = [], [], None
    in_directive = False
    for i, line in enumerate(lines):
        if _MARK.search(line):
            first_marker = i if first_marker is None else first_marker
            in_directive = True
            keep.append(line)
        elif in_directive and (line.startswith(":") or not line.strip()):
            keep.append(line)
        elif in_directive and re.match(r"^```+\s*$", line):
            keep.append(line)
            in_directive = False
        else:
            in_directive = False
            prose.append(line)
    prose_first = bool(prose) and lines.index(prose[0]) < (first_marker or 0)
    return "".join(keep).rstrip("\n"), "".join(prose).strip(), prose_first


def _prose_cell(text: str, cell_id: str) -> dict:
    if '"""' in text:
        raise ValueError(f"cell {cell_id}: solution prose contains triple quotes; rephrase it before folding.")
    return {"cell_type": "code", "id": cell_id, "execution_count": None, "outputs": [],
            "metadata": {**json.loads(json.dumps(PROSE_META)), **FORM, "jupyter": {"source_hidden": True}},
            "source": f'{PROSE_TITLE}\nhelpers.explain(r"""\n{text}\n""")\n'}


def fold_prose(nb: dict) -> int:
    """Move solution prose out of markdown cells into hidden code cells that ``helpers.explain`` it.

    Colab cannot hide a text cell; a code cell it can. The book renders the explanation in place
    (the cell's input is removed, its Markdown output parsed as MyST, so math and roles work).
    Returns how many cells were folded.
    """
    folded = 0
    for i in reversed(solution_prose(nb)):
        cell = nb["cells"][i]
        src = _source(cell)
        if not _MARK.search(src):
            nb["cells"][i] = _prose_cell(src.strip(), cell.get("id", f"prose-{i}"))
        else:
            markers, prose, prose_first = _split_marker_cell(src)
            _set_source(cell, markers)
            new = _prose_cell(prose, f"{cell.get('id', i)}-why")
            nb["cells"].insert(i if prose_first else i + 1, new)
        folded += 1
    return folded


def apply(nb: dict) -> int:
    """Fold solution prose into hidden code cells and add the metadata in place; return how many cells changed."""
    changed = fold_prose(nb)
    solutions, stubs = classify(nb)
    for i in solutions:
        cell = nb["cells"][i]
        before = json.dumps(cell, sort_keys=True)
        src = _source(cell)
        if not TITLE_LINE.match(src):
            _set_source(cell, TITLE + "\n" + src)
        meta = cell.setdefault("metadata", {})
        meta.update(FORM)
        meta.setdefault("jupyter", {})["source_hidden"] = True
        changed += json.dumps(cell, sort_keys=True) != before
    for i in stubs:
        meta = nb["cells"][i].setdefault("metadata", {})
        tags = meta.setdefault("tags", [])
        if STUB_TAG not in tags:
            tags.append(STUB_TAG)
            changed += 1
    for i in measuring_cells(nb):
        tags = nb["cells"][i].get("metadata", {}).get("tags", [])
        if STUB_TAG in tags:
            tags.remove(STUB_TAG)
            changed += 1
    return changed


def solution_prose(nb: dict) -> list[int]:
    """Indices of markdown cells with text of their own between a solution's start and end markers.

    Colab cannot hide a text cell, so such prose shows in plain view under the exercise; it
    belongs in the solution's code cell (comments, or an explanation the cell prints).
    """
    classify(nb)  # the markers are balanced, or this raises naming the cell
    inside, found = False, []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        src = _source(cell)
        marks = list(_MARK.finditer(src))
        rest = re.sub(r"(?m)^.*" + _MARK.pattern + r".*$", "", src)  # marker lines, with their arguments
        rest = re.sub(r"(?m)^:[\w-]+:.*$|^```+\s*$", "", rest).strip()  # directive options and fences
        if inside and not marks and src.strip():
            found.append(i)
        elif marks and rest and (inside or any(m.group(1) == "solution" and m.group(2) == "start" for m in marks)):
            found.append(i)  # text next to a marker, inside the solution
        for m in marks:
            if m.group(1) == "solution":
                inside = m.group(2) == "start"
    return found


def problems(nb: dict) -> list[str]:
    """Solution or stub cells that lack their metadata, and solution prose that Colab would show
    (empty list when all is well)."""
    solutions, stubs = classify(nb)
    found = [f"cell {i} (solution prose): a markdown cell inside a solution shows in plain view in Colab; "
             "move its text into the solution's code cell (comments, or an explanation the cell prints)"
             for i in solution_prose(nb)]
    for i in solutions:
        cell = nb["cells"][i]
        meta = cell.get("metadata", {})
        if not TITLE_LINE.match(_source(cell)):
            found.append(f"cell {i} (solution): source does not begin with a '# @title' line")
        if meta.get("cellView") != "form":
            found.append(f"cell {i} (solution): metadata lacks \"cellView\": \"form\" (Colab)")
        if meta.get("jupyter", {}).get("source_hidden") is not True:
            found.append(f"cell {i} (solution): metadata lacks \"jupyter\": {{\"source_hidden\": true}}")
    for i in stubs:
        if STUB_TAG not in nb["cells"][i].get("metadata", {}).get("tags", []):
            found.append(f"cell {i} (exercise stub): lacks the {STUB_TAG!r} tag")
    for i in measuring_cells(nb):
        if STUB_TAG in nb["cells"][i].get("metadata", {}).get("tags", []):
            found.append(f"cell {i} (measurement inside an exercise): the {STUB_TAG!r} tag hides the measurement "
                         "the reader's prediction is graded against; remove it")
    return found


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, nb: dict) -> None:
    # the layout tools/nbtools.py strip writes, so a later strip leaves no diff
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _apply_file(path: Path) -> str:
    nb = _read(path)
    n = apply(nb)
    if n:
        _write(path, nb)
    return f"{n} cell(s) changed"


def main(argv: list[str]) -> int:
    from nbtools import run_cli  # tools/ is on the path when this file runs as a script

    return run_cli(argv, "nbmeta.py", "apply", _apply_file, lambda path: problems(_read(path)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
