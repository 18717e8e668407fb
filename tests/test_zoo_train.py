"""Smoke test of the training recipe: a few steps of a tiny model into a temp dir."""

from __future__ import annotations

import json

import pytest

from helpers.zoo import train
from helpers.zoo.modeling import load_folder


@pytest.mark.parametrize("name", ["rs-attn-2l", "rs-gpt2-4l"])
def test_tiny_recipe_writes_loadable_checkpoint(name, tmp_path):
    card = train.train(name, tmp_path, tiny=True, threads=1)
    for f in ["model.safetensors", "tokenizer.json", "card.json", "MODEL_CARD.md", "training_log.json"]:
        assert (tmp_path / f).exists(), f
    bridge = load_folder(tmp_path)
    assert bridge.cfg.n_layers == train.RECIPES[name]["n_layers"]
    logits = bridge(bridge.to_tokens("The capital of France is"))
    assert logits.shape[-1] == card["vocab_size"]
    log = json.loads((tmp_path / "training_log.json").read_text())["log"]
    assert log[-1]["step"] == train.TINY["steps"] and "icl_score" in log[-1]
    # the ICL score on held-out text alone is logged at every step, and differs from the mixture's
    assert all(abs(row["icl_score_text"]) < 20 for row in log)
    assert log[-1]["icl_score_text"] != log[-1]["icl_score"]


def test_text_windows_are_held_out_text_cut_at_bos():
    """The text-only ICL windows never come from the training corpus (seed 0 is refused), start with BOS,
    and are the same windows on every call (the log's rows are comparable across steps)."""
    from helpers.zoo import load_tokenizer
    from helpers.zoo.evals import text_windows

    tok = load_tokenizer()
    with pytest.raises(ValueError, match="seed 0"):
        text_windows(tok, 4, 32, 0)
    a, b = text_windows(tok, 4, 32, 11), text_windows(tok, 4, 32, 11)
    assert a.shape == (4, 32) and (a[:, 0] == tok.bos_token_id).all() and (a == b).all()
    assert not (a == text_windows(tok, 4, 32, 12)).all()


def test_unknown_recipe(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        train.train("nope", tmp_path, tiny=True)
