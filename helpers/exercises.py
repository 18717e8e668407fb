"""Checkers for the book's exercises: they say what is wrong, not just that it is.

Convention, used by every chapter: an exercise cell holds a stub that raises
``NotImplementedError``; the next line calls a checker from the chapter's
helpers module. A checker returns False and prints a reminder while the stub is
untouched, raises :class:`CheckFailed` with a message naming the first wrong
entry (or the shape, or the likely mistake) when the answer is wrong, and prints
a pass line and returns True when it is right. Solutions (folded away in the
book, executed by the tests) end with ``assert check_...(solution)``.

Every checker is an :class:`Exercise`: the reference (a public
``solution_<name>`` in the topic module), the cases it is tried on, and the
known wrong answers as :class:`Mistake` data, each with the misconception it
shows. The prose lives in one data file, ``helpers/exercises.toml``: each
exercise's hint, and the wrong *values* (predictions, choices) with their
misconceptions; wrong *functions* are code, beside the exercise they belong to. Exercises register themselves in :data:`REGISTRY`, so one test checks
that every reference passes and every listed mistake is caught by name.
"""
from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["CheckFailed", "Exercise", "Mistake", "NOT_ATTEMPTED", "PROSE_FILE", "REGISTRY", "attempt",
           "check_function", "compare", "passed"]


class CheckFailed(AssertionError):
    """The reader's answer is wrong; the message says how."""


def passed(name: str) -> bool:
    print(f"✔ {name}: correct.")
    return True


def _to_numpy(x):
    import numpy as np

    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=float)


def compare(actual: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Raise :class:`CheckFailed` unless ``actual`` matches ``expected``.

    Numbers, sequences, NumPy arrays and torch tensors are compared by value
    within tolerance; anything else with ``==``. The message names the first
    mismatch.
    """
    import numpy as np

    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)) and not hasattr(actual, "item"):
            raise CheckFailed(f"{what}: expected a number like {expected!r}, got {type(actual).__name__} {actual!r}.")
        a = float(actual.item() if hasattr(actual, "item") else actual)
        if not math.isclose(a, float(expected), rel_tol=rtol, abs_tol=atol):
            raise CheckFailed(f"{what}: expected {expected!r}, got {a!r}.")
        return
    if isinstance(expected, (str, bool)) or expected is None:
        if actual != expected:
            raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}.")
        return
    exp = _to_numpy(expected)
    if actual is None:
        raise CheckFailed(f"{what}: got None — did the function forget to return its result?")
    try:
        act = _to_numpy(actual)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: expected an array of shape {exp.shape}, got {type(actual).__name__}.") from None
    if act.shape != exp.shape:
        raise CheckFailed(f"{what}: expected shape {tuple(exp.shape)}, got {tuple(act.shape)}.")
    bad = ~np.isclose(act, exp, rtol=rtol, atol=atol)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        n_bad = int(bad.sum())
        raise CheckFailed(
            f"{what}: {n_bad} of {exp.size} entries differ; first at index {idx}: "
            f"expected {exp[idx]:.6g}, got {act[idx]:.6g}."
        )


NOT_ATTEMPTED = object()  # what ``attempt`` returns while the exercise is still a stub


def attempt(fn: Callable, name: str, *args, **kwargs):
    """Call the reader's ``fn(*args, **kwargs)`` for a checker.

    Returns its result; returns ``NOT_ATTEMPTED`` (after a reminder) while ``fn``
    still raises NotImplementedError; turns any other exception into a
    :class:`CheckFailed` that names it, so a mistake never ends in a bare
    traceback from deep inside torch.
    """
    if not callable(fn):
        raise CheckFailed(f"{name}: expected a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        _remind(name)
        return NOT_ATTEMPTED
    except CheckFailed:
        raise
    except Exception as exc:  # the reader's code broke: say where, in words
        raise CheckFailed(f"{name}: your function raised {type(exc).__name__}: {exc}") from exc


def check_function(
    fn: Callable,
    reference: Callable,
    cases: Sequence[tuple[tuple, dict]],
    name: str,
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> bool:
    """Run ``fn`` and ``reference`` on every case and compare the results.

    Returns False (with a reminder) if ``fn`` still raises NotImplementedError,
    raises :class:`CheckFailed` on the first wrong case, returns True otherwise.
    """
    for args, kwargs in cases:
        got = attempt(fn, name, *args, **kwargs)
        if got is NOT_ATTEMPTED:
            return False
        want = reference(*args, **kwargs)
        shown = ", ".join([*(repr(a) if _small(a) else type(a).__name__ for a in args),
                           *(f"{k}={v!r}" for k, v in kwargs.items() if _small(v))])
        try:
            compare(got, want, f"{name}({shown})", atol=atol, rtol=rtol)
        except CheckFailed as exc:
            raise CheckFailed(f"{exc}" + (f"\nHint: {hint}" if hint else "")) from None
    return passed(name)


def _small(x) -> bool:
    return isinstance(x, (int, float, str, bool)) or x is None


def _remind(name: str, value: bool = False) -> None:
    """One reminder line for an untouched stub; silent while the static book is built."""
    from .env import in_book_build

    if not in_book_build():
        what = "the `...` with your answer" if value else "`raise NotImplementedError` with your code"
        print(f"… {name}: not attempted yet. Replace {what}, then re-run.")


def _describe(args: tuple, kwargs: dict) -> str:
    return ", ".join([*(repr(a) if _small(a) else type(a).__name__ for a in args),
                      *(f"{k}={v!r}" for k, v in kwargs.items() if _small(v))])


def _fresh(x):
    """A copy of a tensor argument, so a function that writes into its input cannot change the next call's."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().clone()
    except ImportError:  # pragma: no cover
        pass
    return x


_UNSET = object()


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer and the misconception it shows.

    ``Mistake(fn, why)``: ``fn`` takes the exercise's arguments and returns the
    wrong answer a reader with that misconception would compute.
    ``Mistake(value=v, why=why)``: for exercises whose answer is a value.
    """

    fn: Callable | None = None
    why: str = ""
    value: Any = _UNSET

    def __post_init__(self):
        if (self.fn is None) == (self.value is _UNSET):
            raise ValueError("Mistake needs exactly one of fn (a wrong function) or value (a wrong answer).")
        if self.fn is not None and not callable(self.fn):
            raise TypeError(f"Mistake.fn must be callable, got {type(self.fn).__name__}; "
                            "for a wrong value write Mistake(value=..., why=...).")
        if not isinstance(self.why, str) or not self.why.strip():
            raise ValueError("Mistake.why must say, in words, which misconception gives this answer.")

    def answer(self, args: tuple, kwargs: dict):
        """This mistake's answer on one case (the value itself for a value mistake)."""
        if self.fn is None:
            return self.value
        return self.fn(*map(_fresh, args), **{k: _fresh(v) for k, v in kwargs.items()})


#: The checkers' prose: each exercise's hint and the wrong *values* a reader may give, with the
#: misconception behind each, keyed by exercise id. Wrong *functions* stay in code beside their exercise.
PROSE_FILE = Path(__file__).with_name("exercises.toml")


@functools.cache
def _prose() -> dict:
    with PROSE_FILE.open("rb") as f:
        prose = tomllib.load(f)
    for ex_id, entry in prose.items():
        unknown = set(entry) - {"hint", "mistake"}
        if unknown or not all({"value", "why"} <= set(m) for m in entry.get("mistake", ())):
            raise ValueError(f"{PROSE_FILE.name} [{ex_id}]: only `hint` and [[mistake]] tables with `value` and "
                             f"`why` are allowed (found {sorted(unknown) or 'a mistake without value or why'}).")
    return prose


def _from_toml(value):
    """TOML has arrays, not tuples: a wrong (layer, head) answer is compared as the tuple a reader writes."""
    return tuple(_from_toml(v) for v in value) if isinstance(value, list) else value


#: Every :class:`Exercise` created so far, by id.
REGISTRY: dict[str, "Exercise"] = {}


@dataclass(eq=False)
class Exercise:
    """One exercise: reference ``solution``, ``cases`` to try, known ``mistakes``.

    ``cases`` is a list of ``(args, kwargs)`` or a zero-argument callable that
    returns one (build cases that need a model lazily). ``cases=None`` makes a
    value exercise: ``solution()`` takes no arguments and the reader's answer is
    checked with :meth:`check_value` (or a zero-argument function with
    :meth:`check`). ``compare(got, want, what)`` replaces the default numeric
    comparison and must raise :class:`CheckFailed` on a mismatch.
    """

    id: str
    name: str
    solution: Callable
    cases: Sequence[tuple[tuple, dict]] | Callable[[], Sequence[tuple[tuple, dict]]] | None = None
    mistakes: Sequence[Mistake] = field(default_factory=tuple)
    hint: str = ""
    atol: float = 1e-5
    rtol: float = 1e-4
    compare: Callable[[Any, Any, str], None] | None = None
    choices: Sequence | None = None  # a value exercise whose answer is one of these (a bucket, a label)

    def __post_init__(self):
        if not isinstance(self.id, str) or "." not in self.id:
            raise ValueError(f"Exercise id must be a chapter-prefixed string like 'ch1.count-terms', got {self.id!r}.")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Exercise name must be the reader's function name, a non-empty string.")
        if not callable(self.solution):
            raise TypeError(f"Exercise {self.id}: solution must be callable, got {type(self.solution).__name__}.")
        prose = _prose().get(self.id, {})
        if self.hint and "hint" in prose:
            raise ValueError(f"Exercise {self.id}: the hint is given both in code and in {PROSE_FILE.name}; keep one.")
        self.hint = self.hint or prose.get("hint", "")
        self.mistakes = tuple(self.mistakes) + tuple(
            Mistake(value=_from_toml(m["value"]), why=m["why"]) for m in prose.get("mistake", ()))
        self._built, self._wants = None, {}
        for m in self.mistakes:
            if not isinstance(m, Mistake):
                raise TypeError(f"Exercise {self.id}: mistakes must be Mistake objects, got {type(m).__name__}.")
        old = REGISTRY.get(self.id)
        if old is not None and _origin(old.solution) != _origin(self.solution):
            raise ValueError(f"Exercise id {self.id!r} is already used by {_origin(old.solution)}.")
        REGISTRY[self.id] = self  # a module reloaded in a notebook replaces its own entries

    # -- cases and comparison -------------------------------------------------
    def all_cases(self) -> list[tuple[tuple, dict]]:
        """The cases as a list of ``(args, kwargs)`` (lazy cases are built on first use, then kept)."""
        if self._built is not None:
            return self._built
        cases = self.cases() if callable(self.cases) else self.cases
        if cases is None:
            return [((), {})]
        out = []
        for case in cases:
            args, kwargs = case
            out.append((tuple(args), dict(kwargs)))
        if not out:
            raise ValueError(f"Exercise {self.id} has no cases.")
        self._built = out
        return out

    def _want(self, i: int | None, args: tuple, kwargs: dict):
        """The solution's answer; on the exercise's own case ``i`` it is computed once and kept."""
        if i is None:
            return self.solution(*args, **kwargs)
        if i not in self._wants:
            self._wants[i] = self.solution(*args, **kwargs)
        return self._wants[i]

    def _cmp(self, got, want, what: str) -> None:
        if self.compare is not None:
            self.compare(got, want, what)
        else:
            compare(got, want, what, atol=self.atol, rtol=self.rtol)

    def _matches(self, got, want) -> bool:
        try:
            self._cmp(got, want, self.name)
        except CheckFailed:
            return False
        return True

    def _gives(self, m: Mistake, got, args: tuple, kwargs: dict, want=_UNSET) -> bool:
        """True if ``got`` is mistake ``m``'s answer on this case (and, given ``want``, that answer is wrong)."""
        try:
            wrong = m.answer(args, kwargs)
        except Exception:  # a mistake that cannot be computed on this case says nothing about it
            return False
        return self._matches(got, wrong) and (want is _UNSET or not self._matches(wrong, want))

    def _diagnose(self, got, want, args: tuple, kwargs: dict, what: str, fn: Callable | None = None,
                  others: Sequence[tuple[tuple, dict]] = ()) -> None:
        """Raise CheckFailed for a wrong ``got``: the misconception if a mistake matches, else the first wrong entry."""
        try:
            self._cmp(got, want, what)
            return
        except CheckFailed as exc:
            first_error = exc
        candidates = [m for m in self.mistakes if self._gives(m, got, args, kwargs, want)]
        if len(candidates) > 1 and fn is not None:  # two misconceptions agree on this case: ask the others
            everywhere = [m for m in candidates if all(self._gives(m, _call_quietly(fn, a, k), a, k) for a, k in others)]
            candidates = everywhere or candidates
        if candidates:
            raise CheckFailed(f"{what}: {candidates[0].why}") from None
        raise CheckFailed(f"{first_error}" + (f"\nHint: {self.hint}" if self.hint else "")) from None

    # -- the two ways to check ---------------------------------------------------
    def check(self, fn: Callable, cases: Sequence[tuple[tuple, dict]] | None = None) -> bool:
        """Check the reader's function on every case (see the module docstring for the outcomes).

        ``cases`` replaces the exercise's own cases for this call (a checker that
        is handed the chapter's model or cache builds its cases from them).
        """
        own = cases is None
        cases = self.all_cases() if own else [(tuple(a), dict(k)) for a, k in cases]
        for i, (args, kwargs) in enumerate(cases):
            got = attempt(fn, self.name, *map(_fresh, args), **{k: _fresh(v) for k, v in kwargs.items()})
            if got is NOT_ATTEMPTED:
                return False
            want = self._want(i if own else None, args, kwargs)
            self._diagnose(got, want, args, kwargs, f"{self.name}({_describe(args, kwargs)})", fn=fn,
                           others=cases[:i] + cases[i + 1:])
        return passed(self.name)

    def check_prediction(self, prediction: Any, *measured) -> bool:
        """Check a predicted value against ``solution(*measured)``, the chapter's own measurement.

        ``...`` (Ellipsis) means not attempted yet. The listed mistakes are matched on
        the same measurement, so a typical wrong prediction is named.
        """
        if self.choices is not None and prediction is not Ellipsis and prediction not in self.choices:
            raise CheckFailed(f"{self.name}: choose one of {tuple(self.choices)}, got {prediction!r}.")
        if prediction is Ellipsis:
            _remind(self.name, value=True)
            return False
        return self.check(lambda *args: prediction, [(tuple(measured), {})])

    def check_value(self, answer: Any) -> bool:
        """Check a value answer against ``solution()``; ``...`` (Ellipsis) means not attempted yet."""
        if answer is Ellipsis:
            _remind(self.name, value=True)
            return False
        if callable(answer):
            raise CheckFailed(f"{self.name}: expected a value, got a function; call it, or use check(fn).")
        if self.choices is not None and answer not in self.choices:
            raise CheckFailed(f"{self.name}: choose one of {tuple(self.choices)}, got {answer!r}.")
        if self.cases is not None:
            raise TypeError(f"Exercise {self.id} checks a function; call .check(fn) instead of .check_value.")
        self._diagnose(answer, self._want(0, (), {}), (), {}, self.name)
        return passed(self.name)


def _call_quietly(fn: Callable, args: tuple, kwargs: dict):
    try:
        return fn(*map(_fresh, args), **{k: _fresh(v) for k, v in kwargs.items()})
    except Exception:
        return None


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
