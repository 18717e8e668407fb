import numpy as np
import pytest
import torch

from helpers.exercises import CheckFailed, check_function, compare


def test_compare_numbers_and_arrays():
    compare(1.0, 1.0 + 1e-7, "x")
    with pytest.raises(CheckFailed, match="expected 2, got 3.0"):
        compare(3.0, 2, "x")
    with pytest.raises(CheckFailed, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        compare(torch.zeros(3, 2), np.zeros((2, 3)), "m")
    with pytest.raises(CheckFailed, match=r"first at index \(1,\)"):
        compare(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]), "v")
    with pytest.raises(CheckFailed, match="forget to return"):
        compare(None, torch.zeros(2), "v")


def test_check_function_three_outcomes(capsys):
    def reference(a, b):
        return a + b

    def stub(a, b):
        raise NotImplementedError

    def wrong(a, b):
        return a - b

    def broken(a, b):
        return a / 0

    cases = [((1, 2), {}), ((3, 4), {})]
    assert check_function(stub, reference, cases, "add") is False
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"add\(1, 2\): expected 3"):
        check_function(wrong, reference, cases, "add", hint="add them")
    with pytest.raises(CheckFailed, match="ZeroDivisionError"):
        check_function(broken, reference, cases, "add")
    assert check_function(reference, reference, cases, "add") is True


def test_attempt_reminds_on_stubs_and_names_errors(capsys):
    from helpers.exercises import NOT_ATTEMPTED, attempt

    def stub(x):
        raise NotImplementedError

    assert attempt(stub, "f", 1) is NOT_ATTEMPTED
    assert "f: not attempted yet" in capsys.readouterr().out
    assert attempt(lambda x: x + 1, "f", 1) == 2
    with pytest.raises(CheckFailed, match="f: your function raised IndexError"):
        attempt(lambda x: [][x], "f", 1)
    with pytest.raises(CheckFailed, match="expected a function"):
        attempt(3, "f")


# --- the Exercise / Mistake shape ------------------------------------------------------------------

import importlib
import pkgutil

import helpers
from helpers.exercises import REGISTRY, Exercise, Mistake


def _count_terms(n_layers, n_heads):
    return 2 + n_layers * (n_heads + 1)


def _toy_exercise():
    return Exercise(
        id="test.count-terms", name="count_terms", solution=_count_terms,
        cases=[((4, 8), {}), ((12, 12), {}), ((1, 1), {})],
        mistakes=[Mistake(lambda L, H: L * H, "counts only the heads"),
                  Mistake(lambda L, H: 1 + L * (H + 1), "merges the two embeddings")],
        hint="embeddings, heads, MLPs",
    )


def test_exercise_rejects_a_listed_mistake_with_its_misconception():
    ex = _toy_exercise()
    assert REGISTRY["test.count-terms"] is ex
    with pytest.raises(CheckFailed, match=r"count_terms\(4, 8\): counts only the heads"):
        ex.check(lambda L, H: L * H)
    with pytest.raises(CheckFailed, match="merges the two embeddings"):
        ex.check(lambda L, H: 1 + L * (H + 1))


def test_exercise_rejects_an_unlisted_wrong_answer_with_the_first_wrong_entry_and_hint():
    ex = _toy_exercise()
    with pytest.raises(CheckFailed, match=r"(?s)count_terms\(4, 8\): expected 38, got 39.*Hint: embeddings"):
        ex.check(lambda L, H: 3 + L * (H + 1))


def test_exercise_rejects_a_constant_function():
    ex = _toy_exercise()
    right_on_first_case = _count_terms(4, 8)
    with pytest.raises(CheckFailed, match=r"count_terms\(12, 12\): expected 158"):
        ex.check(lambda L, H: right_on_first_case)


def test_exercise_outcomes_stub_error_pass(capsys, monkeypatch):
    ex = _toy_exercise()

    def stub(L, H):
        raise NotImplementedError

    assert ex.check(stub) is False
    assert "count_terms: not attempted yet" in capsys.readouterr().out
    monkeypatch.setenv("RS_BOOK_BUILD", "1")
    assert helpers.in_book_build()
    assert ex.check(stub) is False
    assert capsys.readouterr().out == ""  # the static book shows no reminder
    monkeypatch.delenv("RS_BOOK_BUILD")
    with pytest.raises(CheckFailed, match="your function raised KeyError"):
        ex.check(lambda L, H: {}[L])
    assert ex.check(_count_terms) is True
    assert "✔ count_terms: correct." in capsys.readouterr().out


def test_value_exercise_and_its_mistakes(capsys):
    ex = Exercise(id="test.value", name="slope", solution=lambda: -0.5,
                  mistakes=[Mistake(value=0.5, why="the sign: the loss falls"), Mistake(value=0.0, why="flat")],
                  atol=1e-3)
    assert ex.check_value(-0.5001) is True
    assert ex.check(lambda: -0.5) is True
    with pytest.raises(CheckFailed, match="the sign"):
        ex.check_value(0.5)
    with pytest.raises(CheckFailed, match="slope: expected -0.5, got 0.25"):
        ex.check_value(0.25)
    capsys.readouterr()
    assert ex.check_value(...) is False
    assert "not attempted" in capsys.readouterr().out


def test_exercise_and_mistake_validate_their_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        Mistake(why="no answer")
    with pytest.raises(ValueError, match="misconception"):
        Mistake(lambda x: x)
    with pytest.raises(ValueError, match="chapter-prefixed"):
        Exercise(id="nodot", name="f", solution=abs)
    with pytest.raises(TypeError, match="Mistake objects"):
        Exercise(id="test.bad", name="f", solution=abs, cases=[((1,), {})], mistakes=[lambda x: x])
    with pytest.raises(ValueError, match="already used"):
        Exercise(id="test.count-terms", name="g", solution=abs, cases=[((1,), {})])


def _import_every_helpers_module():
    for info in pkgutil.walk_packages(helpers.__path__, "helpers."):
        importlib.import_module(info.name)


def _book_exercises():
    _import_every_helpers_module()
    return [ex for key, ex in sorted(REGISTRY.items()) if not key.startswith("test.")]


def test_registry_is_filled_by_the_topic_modules():
    exercises = _book_exercises()
    assert len({ex.id.split(".")[0] for ex in exercises}) >= 1, "no topic module registered an Exercise"


def test_every_registered_exercise_accepts_its_solution_and_names_each_mistake(capsys):
    """Generic: every Exercise in the book passes its own reference, and every listed mistake is caught by name."""
    for ex in _book_exercises():
        torch.set_grad_enabled(True)  # each exercise starts as a fresh chapter would (a model loader may switch it off)
        assert ex.check(ex.solution) is True, ex.id
        assert len(ex.mistakes) >= 2, f"{ex.id}: list at least two typical wrong answers"
        for m in ex.mistakes:
            with pytest.raises(CheckFailed) as info:
                if m.fn is None:
                    ex.check_value(m.value)
                else:
                    ex.check(m.fn)
            assert m.why in str(info.value), f"{ex.id}: mistake {m.why!r} was rejected as {info.value}"


def test_every_registered_function_exercise_rejects_a_constant(capsys):
    """A function that returns the right answer for the first case only (a constant) must fail."""
    for ex in _book_exercises():
        torch.set_grad_enabled(True)
        if ex.cases is None:
            continue
        (args, kwargs), *_ = ex.all_cases()
        first = ex.solution(*args, **kwargs)
        with pytest.raises(CheckFailed):
            ex.check(lambda *a, _first=first, **k: _first)


def test_check_prediction_compares_with_the_chapters_own_measurement(capsys):
    """A prediction is checked against the solution on the measurement the chapter passes in."""
    ex = Exercise(id="test.predict-sign", name="predicted_sign", solution=lambda gap: "more" if gap > 0 else "less",
                  cases=[((1.0,), {}), ((-1.0,), {})],
                  mistakes=[Mistake(lambda gap: "same", "costs add only if the blocks do not read each other")])
    assert ex.check_prediction(..., 0.5) is False
    assert "predicted_sign: not attempted yet. Replace the `...`" in capsys.readouterr().out
    assert ex.check_prediction("more", 0.5) is True
    with pytest.raises(CheckFailed, match="expected 'less'"):
        ex.check_prediction("more", -0.5)
    with pytest.raises(CheckFailed, match="costs add only if"):
        ex.check_prediction("same", -0.5)


def test_the_prose_file_belongs_to_declared_exercises():
    """Every table of helpers/exercises.toml names an exercise some topic module declares, so a renamed
    exercise cannot silently lose its hint and its wrong values."""
    import tomllib

    from helpers.exercises import PROSE_FILE

    _import_every_helpers_module()
    with PROSE_FILE.open("rb") as f:
        prose = tomllib.load(f)
    assert prose, "helpers/exercises.toml is empty"
    orphans = sorted(set(prose) - set(REGISTRY))
    assert not orphans, f"exercises.toml has tables for undeclared exercises: {orphans}"
    for ex_id, entry in prose.items():  # the loader gave each exercise its values and hint
        ex = REGISTRY[ex_id]
        assert ex.hint == entry.get("hint", ex.hint)
        values = [m.value for m in ex.mistakes if m.fn is None]
        assert len(values) >= len(entry.get("mistake", []))


def test_the_prose_loader_refuses_a_malformed_table(tmp_path, monkeypatch):
    """A typo in the prose file (a misspelt key, a mistake without `why`) is an error that names the table,
    and a hint given both in code and in the file is refused: one home for each sentence."""
    import helpers.exercises as E

    bad = tmp_path / "exercises.toml"
    bad.write_text('["test.prose"]\nhitn = "typo"\n')
    monkeypatch.setattr(E, "PROSE_FILE", bad)
    E._prose.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"\[test.prose\].*hitn"):
            E.Exercise("test.prose", "f", lambda: 1.0)
        bad.write_text('["test.prose"]\nhint = "from the file"\n[["test.prose".mistake]]\nvalue = 2.0\n')
        E._prose.cache_clear()
        with pytest.raises(ValueError, match="without value or why"):
            E.Exercise("test.prose", "f", lambda: 1.0)
        bad.write_text('["test.prose"]\nhint = "from the file"\n[["test.prose".mistake]]\nvalue = [0, 2]\n'
                       'why = "a tuple answer"\n')
        E._prose.cache_clear()
        with pytest.raises(ValueError, match="both in code and in"):
            E.Exercise("test.prose", "f", lambda: 1.0, hint="in code too")
        ex = E.Exercise("test.prose", "f", lambda: (0, 1))
        assert ex.hint == "from the file" and ex.mistakes[0].value == (0, 2)  # arrays come back as tuples
        with pytest.raises(E.CheckFailed, match="a tuple answer"):
            ex.check_value((0, 2))
    finally:
        E._prose.cache_clear()
        E.REGISTRY.pop("test.prose", None)


def test_a_choice_exercise_refuses_an_answer_outside_its_choices(capsys):
    ex = Exercise("test.choice", "bucket", lambda: "b", choices=("a", "b"),
                  mistakes=[Mistake(value="a", why="not a")])
    try:
        with pytest.raises(CheckFailed, match="choose one of"):
            ex.check_value("c")
        assert ex.check_value(...) is False
        assert ex.check_value("b") is True
    finally:
        REGISTRY.pop("test.choice", None)
