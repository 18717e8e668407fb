"""Batched activation patching agrees with the one-pass-per-patch reference."""
import os

import pytest
import torch

import helpers
from helpers import patching as P

MODEL = os.environ.get("RS_TEST_MODEL", "rs-gpt2-4l")


@pytest.fixture(scope="module")
def model():
    return helpers.load_model(MODEL)


@pytest.fixture(scope="module")
def pair(model):
    """Clean/corrupted prompts that differ only in the landmark (same token count)."""
    clean = model.to_tokens(["The Eiffel Tower is located in", "The Brandenburg Gate is located in"])
    corrupted = model.to_tokens(["The Brandenburg Gate is located in", "The Eiffel Tower is located in"])
    paris, berlin = model.to_single_token(" Paris"), model.to_single_token(" Berlin")
    metric = P.logit_diff_metric([paris, berlin], [berlin, paris])
    return clean, corrupted, metric


def _hooks(model, kind="hook_mlp_out"):
    return [f"blocks.{l}.{kind}" for l in range(model.cfg.n_layers)]


def test_sweep_matches_naive_per_position(model, pair):
    clean, corrupted, metric = pair
    hooks = _hooks(model) + _hooks(model, "hook_resid_pre")
    pos = list(range(clean.shape[1]))
    fast = P.patch_sweep(model, clean, corrupted, metric, hooks, positions=pos)
    slow = P.patch_naive(model, clean, corrupted, metric, hooks, positions=pos)
    assert fast.shape == (len(hooks), len(pos))
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    # small passes (several chunks) give the same numbers
    chunked = P.patch_sweep(model, clean, corrupted, metric, hooks, positions=pos, batch_size=6)
    torch.testing.assert_close(chunked, slow, atol=1e-4, rtol=1e-4)


def test_whole_hook_and_per_example_positions(model, pair):
    clean, corrupted, metric = pair
    hooks = _hooks(model)
    fast = P.patch_sweep(model, clean, corrupted, metric, hooks)
    assert fast.shape == (len(hooks),)
    torch.testing.assert_close(fast, P.patch_naive(model, clean, corrupted, metric, hooks), atol=1e-4, rtol=1e-4)
    per_ex = torch.tensor([[3, -1], [2, 6]])
    fast = P.patch_sweep(model, clean, corrupted, metric, hooks, positions=per_ex)
    slow = P.patch_naive(model, clean, corrupted, metric, hooks, positions=per_ex)
    assert fast.shape == (len(hooks), 2)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_reduce_none_keeps_examples(model, pair):
    clean, corrupted, metric = pair
    hooks = _hooks(model)
    per = P.patch_sweep(model, clean, corrupted, metric, hooks, positions=[-1, 3], reduce="none")
    assert per.shape == (len(hooks), 2, clean.shape[0])
    torch.testing.assert_close(per.mean(-1), P.patch_sweep(model, clean, corrupted, metric, hooks, positions=[-1, 3]))
    torch.testing.assert_close(per, P.patch_naive(model, clean, corrupted, metric, hooks, positions=[-1, 3],
                                                  reduce="none"), atol=1e-4, rtol=1e-4)
    heads = P.patch_heads(model, clean, corrupted, metric, reduce="none")
    assert heads.shape == (model.cfg.n_layers, model.cfg.n_heads, clean.shape[0])
    with pytest.raises(ValueError, match="reduce"):
        P.patch_sweep(model, clean, corrupted, metric, hooks, reduce="sum")


def test_restoring_the_whole_stream_restores_the_clean_metric(model, pair):
    clean, corrupted, metric = pair
    clean_value = metric(model(clean)).mean().cpu()      # sweeps return CPU tensors whatever the model's device
    corrupt_value = metric(model(corrupted)).mean().cpu()
    out = P.patch_sweep(model, clean, corrupted, metric, ["blocks.0.hook_resid_pre"])
    torch.testing.assert_close(out[0], clean_value, atol=1e-4, rtol=1e-4)
    # restoring the last position of the last block's output also restores it exactly
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    out = P.patch_sweep(model, clean, corrupted, metric, [last], positions=[-1, 0])
    torch.testing.assert_close(out[0, 0], clean_value, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[0, 1], corrupt_value, atol=1e-4, rtol=1e-4)  # BOS is identical


def test_patch_heads_matches_naive(model, pair):
    clean, corrupted, metric = pair
    fast = P.patch_heads(model, clean, corrupted, metric)
    slow = P.patch_heads(model, clean, corrupted, metric, naive=True)
    assert fast.shape == (model.cfg.n_layers, model.cfg.n_heads)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    fast = P.patch_heads(model, clean, corrupted, metric, layers=[1, 2], positions=[-1, -2], batch_size=5)
    slow = P.patch_heads(model, clean, corrupted, metric, layers=[1, 2], positions=[-1, -2], naive=True)
    assert fast.shape == (2, model.cfg.n_heads, 2)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_metric_tiles_over_runs(model, pair):
    clean, _, metric = pair
    logits = model(clean)
    one = metric(logits)
    three = metric(torch.cat([logits] * 3))
    torch.testing.assert_close(three, one.repeat(3))
    paris = model.to_single_token(" Paris")
    at = P.logit_diff_metric([paris, paris], [0, 0], positions=[2, 3])(logits)
    torch.testing.assert_close(at, logits[[0, 1], [2, 3], paris] - logits[[0, 1], [2, 3], 0])
    p = P.prob_metric([paris, paris])(logits)
    torch.testing.assert_close(p, logits[:, -1].softmax(-1)[:, paris])


def test_validation(model, pair):
    clean, corrupted, metric = pair
    with pytest.raises(ValueError, match="same shape"):
        P.patch_sweep(model, clean, corrupted[:, :-1], metric, ["blocks.0.hook_mlp_out"])
    with pytest.raises(ValueError, match="unknown hook"):
        P.patch_sweep(model, clean, corrupted, metric, ["blocks.0.mlp_out"])
    with pytest.raises(TypeError, match="single string"):
        P.patch_sweep(model, clean, corrupted, metric, "blocks.0.hook_mlp_out")
    with pytest.raises(ValueError, match="positions must lie"):
        P.patch_sweep(model, clean, corrupted, metric, ["blocks.0.hook_mlp_out"], positions=[99])
    with pytest.raises(ValueError, match="batch_size"):
        P.patch_sweep(model, clean, corrupted, metric, ["blocks.0.hook_mlp_out"], batch_size=0)
    with pytest.raises(ValueError, match="one value per row"):
        P.patch_sweep(model, clean, corrupted, lambda lg: lg[:, -1, 0].sum(), ["blocks.0.hook_mlp_out"])
    with pytest.raises(TypeError, match="torch.Tensor"):
        P.patch_sweep(model, [[1, 2]], [[1, 2]], metric, ["blocks.0.hook_mlp_out"])
    with pytest.raises(ValueError, match="layers"):
        P.patch_heads(model, clean, corrupted, metric, layers=[model.cfg.n_layers])
    with pytest.raises(ValueError, match="one id per example"):
        P.logit_diff_metric([1, 2], [3])
