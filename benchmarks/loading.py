"""How long loading takes: each bundled model, and a hub name with no network.

    .venv/bin/python benchmarks/loading.py

Targets (model-organisms issue): a bundled model loads in ≤ 2 s; offline, a hub
name fails in ≤ 10 s with a message naming the bundled alternatives.
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import helpers  # noqa: E402
from helpers import zoo  # noqa: E402


def timed(fn, repeat: int = 3) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    print(f"{'what':44s} {'median (s)':>10s} {'max (s)':>8s} {'target':>7s}")
    for name in zoo.BUNDLED_MODELS:
        t = timed(lambda: helpers.load_model(name, device="cpu"))
        print(f"{'load_model(' + repr(name) + ')':44s} {statistics.median(t):10.2f} {max(t):8.2f} {'2':>7s}")

    def offline_gpt2():
        try:
            helpers.load_model("gpt2")
        except helpers.ModelUnavailableError:
            return
        raise AssertionError("gpt2 loaded offline?")

    for flag in ("1", None):
        if flag is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
            os.environ.pop("TRANSFORMERS_OFFLINE", None)
        label = "load_model('gpt2') " + ("HF_HUB_OFFLINE=1" if flag else "no flag, no network")
        t = timed(offline_gpt2, repeat=1)
        print(f"{label:44s} {statistics.median(t):10.2f} {max(t):8.2f} {'10':>7s}")


if __name__ == "__main__":
    main()
