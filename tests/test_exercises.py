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
