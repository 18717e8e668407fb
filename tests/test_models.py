"""helpers.load_model: bundled models, hub names offline, local checkpoints, bad names."""
import time

import pytest
import torch

import helpers
from helpers import stream, zoo

from conftest import make_gpt2_checkpoint


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        helpers.load_model("gpt-5")
    msg = str(err.value)
    assert "Unknown model 'gpt-5'" in msg
    for name in zoo.BUNDLED_MODELS:
        assert name in msg
    assert "'gpt2'" in msg


def test_wrong_type_is_explained():
    with pytest.raises(TypeError, match="model name"):
        helpers.load_model(3)


def test_hub_name_offline_fails_fast_and_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(helpers.ModelUnavailableError) as err:
        helpers.load_model("gpt2")
    assert time.monotonic() - start < 10
    for name in zoo.BUNDLED_MODELS:
        assert name in str(err.value)


def test_hub_name_without_offline_flag_still_fails_within_ten_seconds(monkeypatch):
    # This machine has no route to the hub; the loader must not hang or retry.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if helpers.hub_reachable(timeout=2):
        pytest.skip("the hub is reachable from this machine")
    start = time.monotonic()
    with pytest.raises(helpers.ModelUnavailableError):
        helpers.load_model("gpt2")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", sorted(zoo.BUNDLED_MODELS))
def test_bundled_models_load(name):
    model = helpers.load_model(name, device="cpu")
    assert not model.training
    logits = model(model.to_tokens("The capital of France is"))
    assert logits.shape[-1] == model.cfg.d_vocab
    assert torch.isfinite(logits).all()


def test_raw_mode_keeps_tied_embeddings():
    model = helpers.load_model("rs-gpt2-4l", device="cpu", compatibility=False)
    assert torch.allclose(model.W_U, model.W_E.T)


def test_gpt2_small_shaped_checkpoint_through_the_reader_path(tmp_path):
    """The real 124M GPT-2 configuration, randomly initialised, through the same loader
    and the chapter-1 decomposition check: the code path Colab readers take with "gpt2"."""
    path = make_gpt2_checkpoint(tmp_path, vocab_size=50257)  # GPT2Config() defaults: 12 x 12, d = 768
    model = helpers.load_model(str(path), device="cpu")
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, model.cfg.d_mlp) == (12, 12, 768, 3072)
    n_params = sum(p.numel() for p in model.parameters())
    assert 160e6 < n_params < 200e6  # 124M + the untied unembedding TransformerLens keeps (38.6M)
    with torch.no_grad():
        _, cache = model.run_with_cache("The Eiffel Tower is located in")
    parts, labels = stream.decompose_stream(model, cache)
    assert len(labels) == stream.count_additive_terms(12, 12, separate_biases=True) == 2 + 12 * 14
    assert (parts.sum(0) - cache["blocks.11.hook_resid_post"]).abs().max() < 1e-3


def test_model_accepts_tokens_from_any_device():
    """load_model's bridge moves token tensors to its own device (as HookedTransformer did),
    so chapter code can build tokens on the CPU and run a model on a GPU."""
    model = helpers.load_model("rs-gpt2-4l")
    assert hasattr(model.forward, "__wrapped__"), "load_model must wrap forward"
    tokens = model.to_tokens("The capital of France is").cpu()
    logits = model(tokens)
    _, cache = model.run_with_cache(tokens)
    hooked = model.run_with_hooks(tokens, fwd_hooks=[])
    torch.testing.assert_close(logits, hooked)
    assert logits.device == next(model.parameters()).device == cache["blocks.0.hook_resid_pre"].device


# ---- inputs the model cannot read: a clear ValueError naming the limit, not torch's IndexError


@pytest.fixture(scope="module")
def organism():
    return helpers.load_model("rs-gpt2-4l", device="cpu")


def test_overlong_prompt_is_rejected_with_the_context_length(organism):
    n_ctx = organism.cfg.n_ctx
    too_long = torch.zeros(1, n_ctx + 1, dtype=torch.long)
    long_text = "the " * (2 * n_ctx)
    calls = {
        "forward": lambda x: organism(x),
        "run_with_cache": lambda x: organism.run_with_cache(x),
        "run_with_hooks": lambda x: organism.run_with_hooks(x, fwd_hooks=[]),
    }
    for name, call in calls.items():
        for bad in (too_long, too_long[0], long_text):
            with pytest.raises(ValueError, match=rf"n_ctx = {n_ctx}\b") as err:
                call(bad)
            assert "rs-gpt2-4l" in str(err.value), name
    with pytest.raises(ValueError, match=rf"n_ctx = {n_ctx}\b"):
        organism.to_tokens(long_text)
    with pytest.raises(ValueError, match=rf"n_ctx = {n_ctx}\b"):
        organism.to_str_tokens(long_text)


def test_out_of_vocabulary_ids_are_rejected_with_the_vocabulary_size(organism):
    d_vocab = organism.cfg.d_vocab
    for bad_id in (d_vocab, d_vocab + 1000, -1):
        tokens = torch.tensor([[0, 5, bad_id]])
        for call in (organism, organism.run_with_cache, lambda x: organism.run_with_hooks(x, fwd_hooks=[])):
            with pytest.raises(ValueError, match=rf"Token id {bad_id} .*d_vocab = {d_vocab}"):
                call(tokens)


def test_inputs_at_the_limits_still_run(organism):
    n_ctx, d_vocab = organism.cfg.n_ctx, organism.cfg.d_vocab
    full = torch.full((2, n_ctx), d_vocab - 1, dtype=torch.long)
    logits, cache = organism.run_with_cache(full)
    assert logits.shape == (2, n_ctx, d_vocab) and torch.isfinite(logits).all()
    # an explicit request to cut still cuts, as TransformerLens does
    assert organism.to_tokens("the " * (2 * n_ctx), truncate=True).shape[-1] == n_ctx
    assert organism.to_tokens("the " * (2 * n_ctx), truncate=False).shape[-1] > n_ctx
    # residual-stream input (start_at_layer) is a float tensor and is not mistaken for ids
    resid = cache["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(organism(resid, start_at_layer=1), logits, atol=1e-4, rtol=1e-4)


def test_without_the_checks_torch_fails_obscurely(tiny_gpt2_dir):
    """Why the checks exist: the raw bridge raises IndexError (or silently truncates)."""
    from helpers.models import _boot_transformers

    raw = _boot_transformers(str(tiny_gpt2_dir), "cpu")
    with pytest.raises(IndexError):
        raw(torch.zeros(1, raw.cfg.n_ctx + 1, dtype=torch.long))
    with pytest.raises(IndexError):
        raw(torch.tensor([[raw.cfg.d_vocab]]))


def test_loading_shows_no_progress_bar_and_restores_the_setting(tiny_gpt2_dir, capfd):
    from transformers.utils import logging as hf_logging

    from helpers.models import _boot_transformers

    hf_logging.enable_progress_bar()
    _boot_transformers(str(tiny_gpt2_dir), "cpu")  # the raw loader draws transformers' bar
    assert "Loading weights" in capfd.readouterr().err
    helpers.load_model(str(tiny_gpt2_dir), device="cpu")
    helpers.load_model("rs-gpt2-4l", device="cpu")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out
    assert hf_logging.is_progress_bar_enabled(), "load_model must restore the reader's progress-bar setting"
