"""Claims: every finding the book states, with the null it beats and the paper it reproduces.

A *finding* is a statement about a model that could have come out otherwise:
"patching block 0's MLP restores most of the answer", "the tuned lens is closer
to the output than the logit lens". :func:`claim` records one. It takes the
measured value, a comparison (:func:`above`, :func:`exceeds`, :func:`within` …)
whose threshold carries its reason, and a :class:`Null`: the value the same
measurement gives where the effect should be absent (chance, a random-init
model, a control head, a shuffled set, a theory value). A finding passes only
if its value satisfies the comparison *and the null does not*; a comparison
that its own null would satisfy is not evidence, and :func:`claim` refuses it.

A *check of the code* is different: a telescoping sum, a decomposition that
adds up, our function matching TransformerLens. These hold on any model, with
random weights as well as trained ones. :func:`identity` records them, labelled
as such, so that they are never mistaken for findings.

Every record is shown under the cell (a one-line summary that opens to the
statement, the null and the reference), glued for the prose when asked, and
kept in :data:`RECORDS`. The book build collects the records of every chapter
into the "Claims and evidence" page and ``_build/claims.json``.

Findings are measured on a particular model (``measured_on``). When a chapter
runs on another model (``MODEL_NAME = "gpt2"``), :func:`claim` does not stop
the chapter: it prints what was measured and what holds on the organism, and
goes on. Identities assert on every model.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ClaimError",
    "Comparison",
    "Null",
    "NULL_KINDS",
    "RECORDS",
    "above",
    "below",
    "between",
    "begin_chapter",
    "claim",
    "exceeds",
    "falls_below",
    "falsifiability_problems",
    "identity",
    "ratio_above",
    "reference_problems",
    "within",
]

#: What a null can be. Each names where the effect should be absent.
NULL_KINDS = {
    "chance": "what a uniform or label-shuffled guess scores",
    "random-init": "the same measurement on a model with the same shape and random weights",
    "control": "the same measurement on a site, head or neuron that should not show the effect",
    "shuffled": "the same measurement with the pairing destroyed (shuffled or resampled inputs)",
    "ablation": "the same measurement with the component removed",
    "theory": "the value a stated theory predicts when the effect is absent",
    "baseline": "a simpler method the finding claims to beat",
}

#: Every claim and identity recorded in this Python session, in order (one per id).
RECORDS: list[dict] = []

_ID = re.compile(r"^[a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*$")
_CONTEXT: dict[str, Any] = {"chapter": None, "model": None}


class Record(dict):
    """A claim's record. A cell that ends with a claim shows its summary line, not this dict again."""

    def _ipython_display_(self):
        pass


class ClaimError(AssertionError):
    """A finding failed, or a claim is malformed (the message says which)."""


@dataclass(frozen=True)
class Null:
    """The value the measurement takes where the effect should be absent.

    ``what`` says what was measured ("layer-1 control head", "random-init
    rs-gpt2-4l"); ``kind`` is one of :data:`NULL_KINDS`.
    """

    what: str
    value: float
    kind: str

    def __post_init__(self):
        if not isinstance(self.what, str) or not self.what.strip():
            raise ValueError("Null(what=...) must say in words what the null measurement is.")
        if self.kind not in NULL_KINDS:
            raise ValueError(f"Null(kind={self.kind!r}) must be one of {sorted(NULL_KINDS)}.")
        object.__setattr__(self, "value", _number(self.value, "Null.value"))


@dataclass(frozen=True)
class Comparison:
    """What makes a value pass: a kind, its parameters, and the reason for its threshold."""

    kind: str
    params: dict = field(default_factory=dict)
    why: str = ""

    def holds(self, value: float, null: float | None = None) -> bool:
        p = self.params
        if self.kind == "above":
            return value > p["threshold"]
        if self.kind == "below":
            return value < p["threshold"]
        if self.kind == "between":
            return p["lo"] <= value <= p["hi"]
        if self.kind == "within":
            return abs(value - p["target"]) <= p["tol"]
        if null is None:
            raise ClaimError(f"a comparison of kind {self.kind!r} needs the null's value.")
        if self.kind == "exceeds":
            return value - null >= p["by"]
        if self.kind == "falls_below":
            return null - value >= p["by"]
        if self.kind == "ratio_above":
            if null <= 0:
                raise ClaimError("ratio_above needs a positive null; use exceeds(by=...) for a null ≤ 0.")
            return value >= p["factor"] * null
        raise ClaimError(f"unknown comparison kind {self.kind!r}")

    def margin(self, value: float, null: float | None = None) -> float:
        """How far ``value`` is inside (+) or outside (−) the comparison's boundary."""
        p = self.params
        if self.kind == "above":
            return value - p["threshold"]
        if self.kind == "below":
            return p["threshold"] - value
        if self.kind == "between":
            return min(value - p["lo"], p["hi"] - value)
        if self.kind == "within":
            return p["tol"] - abs(value - p["target"])
        if self.kind == "exceeds":
            return (value - null) - p["by"]
        if self.kind == "falls_below":
            return (null - value) - p["by"]
        if self.kind == "ratio_above":
            return value - p["factor"] * null
        raise ClaimError(f"unknown comparison kind {self.kind!r}")

    def describe(self, null: float | None = None) -> str:
        p = {k: _fmt(v) for k, v in self.params.items()}
        return _DESCRIBE.get(self.kind, self.kind).format(**p)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "why": self.why}

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        return _make(d["kind"], d.get("why", ""), **d["params"])


_DESCRIBE = {
    "above": "> {threshold}",
    "below": "< {threshold}",
    "between": "in [{lo}, {hi}]",
    "within": "within {tol} of {target}",
    "exceeds": "exceeds the null by ≥ {by}",
    "falls_below": "below the null by ≥ {by}",
    "ratio_above": "≥ {factor} × the null",
}


def _make(kind: str, why: str, **params) -> Comparison:
    if not isinstance(why, str) or len(why.strip()) < 8:
        raise ValueError(
            f"{kind}(...): give why=... — the reason for this threshold or tolerance "
            "(theory, spread over seeds, the control's spread), in words."
        )
    clean = {k: _number(v, f"{kind}({k}=...)") for k, v in params.items()}
    if kind == "between" and clean["lo"] > clean["hi"]:
        raise ValueError(f"between(lo={clean['lo']}, hi={clean['hi']}): lo must not exceed hi.")
    if kind == "within" and clean["tol"] < 0:
        raise ValueError("within(tol=...) must be ≥ 0.")
    if kind == "ratio_above" and clean["factor"] <= 1:
        raise ValueError("ratio_above(factor=...) must be > 1, or the null itself would pass.")
    if kind in ("exceeds", "falls_below") and clean["by"] <= 0:
        raise ValueError(
            f"{kind}(by={clean['by']}) must be > 0: compared with itself the null differs by 0, so with "
            "by ≤ 0 the null itself would pass. Give the margin the effect must clear, with its reason."
        )
    return Comparison(kind, clean, why.strip())


def above(threshold: float, *, why: str) -> Comparison:
    """Passes when the value is greater than ``threshold``."""
    return _make("above", why, threshold=threshold)


def below(threshold: float, *, why: str) -> Comparison:
    """Passes when the value is less than ``threshold``."""
    return _make("below", why, threshold=threshold)


def between(lo: float, hi: float, *, why: str) -> Comparison:
    """Passes when ``lo ≤ value ≤ hi``."""
    return _make("between", why, lo=lo, hi=hi)


def within(target: float, tol: float, *, why: str) -> Comparison:
    """Passes when ``|value − target| ≤ tol`` (a theory value, a paper's figure)."""
    return _make("within", why, target=target, tol=tol)


def exceeds(by: float, *, why: str) -> Comparison:
    """Passes when the value exceeds the null's value by at least ``by``."""
    return _make("exceeds", why, by=by)


def falls_below(by: float, *, why: str) -> Comparison:
    """Passes when the value is below the null's value by at least ``by``."""
    return _make("falls_below", why, by=by)


def ratio_above(factor: float, *, why: str) -> Comparison:
    """Passes when the value is at least ``factor`` times the (positive) null."""
    return _make("ratio_above", why, factor=factor)


def begin_chapter(chapter: str, model: str | None = None) -> None:
    """Say which chapter is running and on which model (once, in the imports cell).

    ``model`` is the chapter's ``MODEL_NAME``. Findings measured on another
    model are then reported instead of asserted.
    """
    if not isinstance(chapter, str) or not re.fullmatch(r"[a-z][a-z0-9]*", chapter):
        raise ValueError(f"begin_chapter: chapter must look like 'ch4', got {chapter!r}.")
    if model is not None and not isinstance(model, str):
        raise TypeError(f"begin_chapter: model must be the model's name (a str), got {type(model).__name__}.")
    _CONTEXT["chapter"], _CONTEXT["model"] = chapter, model


def claim(
    id: str,
    statement: str,
    value,
    test: Comparison,
    null: Null,
    *,
    ref: str | list[str],
    measured_on: str | None,
    where: str | None = None,
    glue: str | None = None,
    fmt: str = ".3g",
    model: str | None = None,
) -> dict:
    """Record a finding, check it and its null, show it, and glue its value.

    ``id`` is stable and chapter-prefixed (``"ch4.fact-site"``); ``statement``
    is the sentence as the prose makes it; ``value`` the measured number;
    ``test`` the comparison; ``null`` the measurement where the effect should be
    absent; ``ref`` one or more bibliography keys (the paper the finding
    reproduces or the method's source) and ``where`` the paper's figure or
    table, if any. ``measured_on`` is the model the finding was established on
    (a bundled organism), or None for a finding about a model the chapter
    builds itself (a toy model), which holds wherever the chapter runs.

    Raises :class:`ClaimError` if the finding fails on the model it was
    measured on, or if its null would pass too. On any other model it prints
    "measured … on …; on … this holds with …" and returns the record.
    """
    _check_id(id)
    if not isinstance(test, Comparison):
        raise TypeError(f"claim {id}: test must be a comparison such as above(...), exceeds(...), got {type(test).__name__}.")
    if not isinstance(null, Null):
        raise TypeError(f"claim {id}: null must be a Null(what, value, kind), got {type(null).__name__}.")
    if not isinstance(statement, str) or len(statement.strip()) < 10:
        raise ValueError(f"claim {id}: statement must be the sentence the prose makes.")
    refs = [ref] if isinstance(ref, str) else list(ref or [])
    if not refs or not all(isinstance(r, str) and re.fullmatch(r"[A-Za-z][\w:-]*", r) for r in refs):
        raise ValueError(f"claim {id}: ref must be one or more bibliography keys (e.g. 'elhage2021mathematical').")
    v = _number(value, f"claim {id}: value")
    model = model if model is not None else _CONTEXT["model"]
    passed = test.holds(v, null.value)
    null_passes = test.holds(null.value, null.value)
    strict = measured_on is None or model is None or model == measured_on
    record = {
        **_head(id, "finding", statement, v),
        "test": test.to_dict(),
        "comparison": test.describe(),
        "tolerance_why": test.why,
        "null": {"what": null.what, "value": null.value, "kind": null.kind},
        "null_passes": null_passes,
        "margin": test.margin(v, null.value),
        "passed": passed,
        "measured_on": measured_on,
        "model": model,
        "reference": refs,
        "where": where,
    }
    _record(record)
    if glue:
        from .book import glue as _glue

        _glue(glue, v)
    _show(record, fmt)
    if strict:
        if null_passes:
            raise ClaimError(
                f"claim {id} is not evidence: its null ({null.what} = {_fmt(null.value)}) also satisfies "
                f"'{test.describe()}'. Tighten the comparison or choose the null that the effect must beat."
            )
        if not passed:
            raise ClaimError(
                f"claim {id} failed on {model or measured_on or 'this model'}: measured {_fmt(v)}, "
                f"needed {test.describe()} (null: {null.what} = {_fmt(null.value)}). Statement: {statement}"
            )
    return Record(record)


def identity(
    id: str,
    statement: str,
    actual,
    expected,
    *,
    atol: float,
    rtol: float = 0.0,
    why: str,
) -> dict:
    """Record and assert a check of the code: ``actual`` equals ``expected`` within tolerance.

    For decompositions that must add up, our code matching TransformerLens,
    shapes and counts that follow from definitions. These hold on every model,
    so they assert whatever model the chapter runs on. ``why`` gives the reason
    for the tolerance (float32 rounding over a sum of N terms, exact integers).
    """
    _check_id(id)
    if not isinstance(statement, str) or len(statement.strip()) < 10:
        raise ValueError(f"identity {id}: statement must say what the code guarantees.")
    if not isinstance(why, str) or len(why.strip()) < 8:
        raise ValueError(f"identity {id}: give why=... — the reason for the tolerance.")
    err, scale = _max_abs_diff(actual, expected, id)
    atol, rtol = float(atol), float(rtol)
    if atol < 0 or rtol < 0:
        raise ValueError(f"identity {id}: atol and rtol must be ≥ 0.")
    ok = err <= atol + rtol * scale
    record = {
        **_head(id, "identity", statement, err),
        "test": {"kind": "max_abs_diff", "params": {"atol": atol, "rtol": rtol}, "why": why.strip()},
        "comparison": f"max |actual − expected| ≤ {_fmt(atol)}" + (f" + {_fmt(rtol)}·scale" if rtol else ""),
        "tolerance_why": why.strip(),
        "null": None,
        "null_passes": None,
        "margin": atol + rtol * scale - err,
        "passed": ok,
        "measured_on": None,
        "model": _CONTEXT["model"],
        "reference": [],
        "where": None,
    }
    _record(record)
    _show(record, ".2g")
    if not ok:
        raise ClaimError(f"identity {id} failed: max difference {err:.3g} > tolerance ({record['comparison']}). {statement}")
    return Record(record)


def falsifiability_problems(records) -> list[str]:
    """Re-run every finding's comparison on its own null; return what is wrong (empty: all sound).

    ``records`` are claim records (:data:`RECORDS`) or the rows of
    ``_build/claims.json`` (each with the full record under ``"record"``). The
    comparison is rebuilt from the stored ``test`` and applied to the null's
    value here, so a record whose comparison was weakened to accept its null is
    caught even if its ``null_passes`` field says otherwise. A finding without a
    null or with a malformed comparison is reported too. Identities are skipped.
    """
    problems = []
    for row in _as_records(records, "falsifiability_problems"):
        if row.get("kind") != "finding":
            continue
        cid = row.get("id", "?")
        null = row.get("null")
        if not isinstance(null, dict) or "value" not in null:
            problems.append(f"{cid}: a finding without a null; give Null(what, value, kind).")
            continue
        try:
            test = Comparison.from_dict(row["test"])
            null_value = _number(null["value"], f"{cid}: null value")
            if test.holds(null_value, null_value):
                problems.append(
                    f"{cid}: its null ({null.get('what')} = {_fmt(null_value)}) also satisfies "
                    f"'{test.describe()}', so the finding is not evidence."
                )
        except (KeyError, TypeError, ValueError, ClaimError) as e:
            problems.append(f"{cid}: malformed comparison {row.get('test')!r} ({e}).")
    return problems


def reference_problems(records, bib_keys) -> list[str]:
    """Findings with no reference key, or with a key that is not in ``bib_keys`` (the bibliography)."""
    keys = set(bib_keys)
    if not keys:
        raise ValueError("reference_problems: bib_keys is empty; pass the keys of references.bib.")
    problems = []
    for row in _as_records(records, "reference_problems"):
        if row.get("kind") != "finding":
            continue
        refs = row.get("reference") or []
        if not refs:
            problems.append(f"{row.get('id', '?')}: a finding without a reference key.")
        problems += [f"{row.get('id', '?')}: reference {k!r} is not in the bibliography." for k in refs if k not in keys]
    return problems


def _as_records(records, who: str) -> list[dict]:
    if isinstance(records, (str, bytes, dict)) or not hasattr(records, "__iter__"):
        raise TypeError(f"{who}: pass a list of claim records (RECORDS or the rows of _build/claims.json).")
    out = []
    for row in records:
        if not isinstance(row, dict):
            raise TypeError(f"{who}: each record must be a dict, got {type(row).__name__}.")
        out.append(row.get("record", row))
    return out


# --------------------------------------------------------------------------- internals


def _head(id: str, kind: str, statement: str, value: float) -> dict:
    """The fields every record starts with."""
    return {"id": id, "chapter": id.split(".")[0], "kind": kind, "statement": statement.strip(), "value": value}


def _check_id(id: str) -> None:
    if not isinstance(id, str) or not _ID.fullmatch(id):
        raise ValueError(f"claim ids look like 'ch4.fact-site' (chapter, dot, lowercase words with '-'), got {id!r}.")


def _number(x, what: str) -> float:
    if hasattr(x, "item") and getattr(x, "numel", lambda: getattr(x, "size", 1))() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{what} must be a real number, got {type(x).__name__} {x!r}.")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x}.")
    return x


def _max_abs_diff(actual, expected, id: str) -> tuple[float, float]:
    import numpy as np

    def arr(x):
        if hasattr(x, "detach"):
            x = x.detach().cpu().double().numpy()
        return np.asarray(x, dtype=float)

    a, e = arr(actual), arr(expected)
    if a.shape != e.shape:
        raise ClaimError(f"identity {id}: shapes differ, {a.shape} vs {e.shape}.")
    if a.size == 0:
        raise ValueError(f"identity {id}: nothing to compare (empty arrays).")
    return float(np.abs(a - e).max()), float(np.abs(e).max())


def _record(record: dict) -> None:
    for i, r in enumerate(RECORDS):
        if r["id"] == record["id"]:
            RECORDS[i] = record  # a re-run cell replaces its record
            return
    RECORDS.append(record)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    return format(x, spec)


def _summary(record: dict, spec: str) -> str:
    v = _fmt(record["value"], spec)
    if record["kind"] == "identity":
        return f"✔ check of the code · {record['id']}: max difference {v} ({record['comparison']})"
    n = record["null"]
    head = "✔ finding" if record["passed"] and not record["null_passes"] else "✘ finding"
    strict = record["measured_on"] is None or record["model"] in (None, record["measured_on"])
    if not strict:
        return (
            f"measured {v} on {record['model']}; on {record['measured_on']} this holds with "
            f"{record['comparison']} (null: {n['what']} = {_fmt(n['value'])}) · {record['id']}"
        )
    return f"{head} · {record['id']}: {v}, {record['comparison']} (null: {n['what']} = {_fmt(n['value'], spec)})"


def _show(record: dict, spec: str) -> None:
    line = _summary(record, spec)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: print
        print(line)
        return
    if get_ipython() is None:
        print(line)
        return
    payload = html.escape(json.dumps(record, ensure_ascii=False), quote=True)
    anchor = "claim-" + record["id"].replace(".", "-")
    detail = html.escape(record["statement"])
    if record["kind"] == "finding":
        refs = ", ".join(record["reference"])
        detail += f"<br><em>Tolerance:</em> {html.escape(record['tolerance_why'])}"
        detail += f"<br><em>Reference:</em> {html.escape(refs)}" + (f" ({html.escape(record['where'])})" if record["where"] else "")
    else:
        detail += f"<br><em>Tolerance:</em> {html.escape(record['tolerance_why'])}"
    body = (
        f'<details class="rs-claim rs-claim-{record["kind"]}" id="{anchor}" data-claim="{payload}">'
        f"<summary>{html.escape(line)}</summary><div>{detail}</div></details>"
    )
    display({"text/plain": line, "text/html": body}, raw=True)
