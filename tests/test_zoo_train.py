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


def test_unknown_recipe(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        train.train("nope", tmp_path, tiny=True)
