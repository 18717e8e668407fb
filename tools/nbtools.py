"""Authoring tool: keep chapter notebooks clean, and the one setup cell every chapter starts with.

``.venv/bin/python tools/nbtools.py strip chapters/*.ipynb`` rewrites notebooks in place;
``.venv/bin/python tools/nbtools.py check chapters/*.ipynb`` lists what is not clean
(the test suite runs the same check, and checks each chapter's second cell equals
:data:`SETUP`). Not part of the ``helpers`` package: readers never need it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: The second cell of every chapter, exactly (tests/test_notebooks.py checks each chapter against it).
SETUP = """# Setup: in Colab this installs the book's helpers package; locally it does nothing.
import importlib.util, subprocess, sys
if importlib.util.find_spec("helpers") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "git+https://github.com/residual-stream/residual-stream"], check=True)
import helpers"""

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
#: Cell metadata that stays: a solution hidden until asked for (tools/nbmeta.py).
SELF_STUDY = {"cellView": "form", "jupyter": {"source_hidden": True},
              "mystnb": {"markdown_format": "myst"}}  # a solution's explanation, rendered as MyST in the book


def problems(path: str | Path) -> list[str]:
    """What keeps the notebook at ``path`` from being clean (empty list if clean)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec is not python3")
    extra = set(nb.get("metadata", {})) - {"kernelspec", "language_info"}
    if extra:
        found.append(f"notebook metadata has extra keys {sorted(extra)}")
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        if cell.get("outputs") and CHECK_MARK not in src:
            found.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None and CHECK_MARK not in src:
            found.append(f"cell {i} has an execution count")
        meta = {k for k, v in cell.get("metadata", {}).items() if k != "tags" and SELF_STUDY.get(k) != v}
        if meta:
            found.append(f"cell {i} has metadata {sorted(meta)}")
    return found


def setup_cell_problem(nb: dict) -> str | None:
    """Why the notebook's second cell is not exactly :data:`SETUP` (None when it is)."""
    cells = nb.get("cells", [])
    if len(cells) < 2 or cells[1].get("cell_type") != "code":
        return "the second cell must be a code cell: the setup cell"
    src = "".join(cells[1]["source"])
    if src != SETUP:
        line = next((i for i, (a, b) in enumerate(zip(src.splitlines(), SETUP.splitlines())) if a != b),
                    min(len(src.splitlines()), len(SETUP.splitlines())))
        return f"the second cell differs from the setup cell (tools/nbtools.py SETUP) at line {line + 1}"
    return None


def strip(path: str | Path) -> None:
    """Remove outputs, execution counts and editor metadata from a notebook."""
    p = Path(path)
    nb = json.loads(p.read_text(encoding="utf-8"))
    nb["metadata"] = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for cell in nb["cells"]:
        old = cell.get("metadata", {})
        cell["metadata"] = {k: v for k, v in old.items() if k == "tags" and v or SELF_STUDY.get(k) == v}
        if cell["cell_type"] == "code" and CHECK_MARK not in "".join(cell["source"]):
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.pop("id", None) if nb.get("nbformat_minor", 0) < 5 else None
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def run_cli(argv: list[str], tool: str, verb: str, fix, check) -> int:
    """The command line both notebook tools share: ``python tools/<tool> {<verb>|check} NOTEBOOK...``.

    ``fix(path)`` rewrites one notebook and returns a line to print (or None); ``check(path)``
    returns its problems, each printed as ``path: problem``. Exit status 1 when any problem
    was found, 2 on a malformed command line.
    """
    if len(argv) < 2 or argv[0] not in (verb, "check"):
        print(f"usage: python tools/{tool} {{{verb}|check}} NOTEBOOK...", file=sys.stderr)
        return 2
    bad = 0
    for name in argv[1:]:
        if argv[0] == verb:
            said = fix(Path(name))
            if said:
                print(f"{name}: {said}")
            continue
        for problem in check(Path(name)):
            print(f"{name}: {problem}")
            bad += 1
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    return run_cli(argv, "nbtools.py", "strip", strip, problems)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
