"""Checkers for the book's exercises: they say what is wrong, not just that it is.

Convention, used by every chapter: an exercise cell holds a stub that raises
``NotImplementedError``; the next line calls a checker from the chapter's
helpers module. A checker returns False and prints a reminder while the stub is
untouched, raises :class:`CheckFailed` with a message naming the first wrong
entry (or the shape, or the likely mistake) when the answer is wrong, and prints
a pass line and returns True when it is right. Solutions (folded away in the
book, executed by the tests) end with ``assert check_...(solution)``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

__all__ = ["CheckFailed", "NOT_ATTEMPTED", "attempt", "check_function", "compare", "passed"]


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
        print(f"… {name}: not attempted yet. Replace `raise NotImplementedError` with your code, then re-run.")
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
