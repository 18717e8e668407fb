"""Tests for helpers.norms: the pre-/post-LN transformer, its measurements and the chapter 3 checkers."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import CheckFailed
from helpers import norms
from helpers.norms import NormConfig, NormGPT

SMALL = NormConfig(n_layers=3, d_model=16, n_heads=2, d_mlp=16, n_ctx=16, d_vocab=20)


# ---------------------------------------------------------------- model
def test_same_seed_same_weights_for_both_placements():
    pre, post = NormGPT(replace(SMALL, norm="pre"), seed=3), NormGPT(replace(SMALL, norm="post"), seed=3)
    pp, qq = dict(pre.named_parameters()), dict(post.named_parameters())
    assert set(pp) - set(qq) == {"ln_final.w", "ln_final.b"}
    assert all(torch.equal(pp[k], qq[k]) for k in qq)
    other = NormGPT(replace(SMALL, norm="pre"), seed=4)
    assert not torch.equal(other.blocks[0].mlp.W_in.weight, pre.blocks[0].mlp.W_in.weight)


def test_xavier_init_variance():
    m = NormGPT(NormConfig(d_model=64, d_mlp=64), seed=0)
    w = m.blocks[0].mlp.W_in.weight
    assert abs(w.var().item() - 1 / 64) < 0.2 / 64  # N(0, 1/d) for a square map
    m2 = NormGPT(NormConfig(d_model=64, d_mlp=64, init_std=0.02), seed=0)
    assert abs(m2.blocks[0].attn.W_Q.weight.std().item() - 0.02) < 0.002


def test_block_updates_are_what_they_claim():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    for norm in ("pre", "post"):
        blk = NormGPT(replace(SMALL, norm=norm), seed=0).blocks[0]
        with torch.no_grad():
            got = blk(x)
            if norm == "pre":
                mid = x + blk.attn(blk.ln1(x))
                want = mid + blk.mlp(blk.ln2(mid))
            else:
                mid = blk.ln1(x + blk.attn(x))
                want = blk.ln2(mid + blk.mlp(mid))
        assert torch.allclose(got, want, atol=1e-6)


def test_attention_is_causal():
    m = NormGPT(SMALL, seed=0)
    toks = torch.randint(0, 20, (1, 8))
    changed = toks.clone()
    changed[0, -1] = (toks[0, -1] + 1) % 20
    with torch.no_grad():
        assert torch.allclose(m(toks)[0, :-1], m(changed)[0, :-1], atol=1e-6)
        assert not torch.allclose(m(toks)[0, -1], m(changed)[0, -1])


def test_config_validation():
    with pytest.raises(ValueError, match="norm"):
        NormConfig(norm="middle")
    with pytest.raises(ValueError, match="divisible"):
        NormConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="n_layers"):
        NormConfig(n_layers=0)
    with pytest.raises(ValueError, match="init_std"):
        NormConfig(init_std=-1.0)
    with pytest.raises(TypeError):
        NormGPT("pre")


def test_forward_validates_input():
    m = NormGPT(SMALL, seed=0)
    with pytest.raises(ValueError, match="n_ctx"):
        m(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D integer"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape"):
        norms.stream_norms(m, torch.zeros(2, 3, 7))


# ---------------------------------------------------------------- measurements
def test_stream_cache_names_and_post_ln_norm():
    m = NormGPT(replace(SMALL, norm="post"), seed=0)
    cache = norms.stream_cache(m, torch.randint(0, 20, (2, 6)))
    assert {"hook_embed", "blocks.0.hook_resid_pre", "blocks.2.hook_resid_mid", "blocks.2.hook_resid_post"} <= set(cache)
    sq = norms.stream_norms(m, torch.randn(4, 6, 16))
    assert sq.shape == (4,)
    assert np.allclose(sq[1:], 16, rtol=1e-3)  # LayerNorm output: ‖h‖² = d


def test_pre_ln_norm_within_xiong_band():
    acc = []
    for s in range(4):
        m = NormGPT(NormConfig(norm="pre", n_layers=6, d_model=64, d_mlp=64), seed=s)
        acc.append(norms.stream_norms(m, torch.randn(8, 16, 64, generator=torch.Generator().manual_seed(s))) / 64)
    mean = np.mean(acc, axis=0)
    lo, hi = norms.xiong_bounds(np.arange(7), 1)
    assert abs(mean[0] - 1) < 0.02  # the input: E‖h_0‖² = d up to sampling
    assert np.all(mean[1:] >= lo[1:]) and np.all(mean[1:] <= hi[1:])
    assert np.all(np.diff(mean) > 0)


def test_xiong_bounds_values_and_validation():
    assert norms.xiong_bounds(0, 10) == (10.0, 10.0)
    assert norms.xiong_bounds(4, 100) == (300.0, 700.0)
    lo, hi = norms.xiong_bounds(np.arange(3), 2)
    assert np.allclose(lo, [2, 3, 4]) and np.allclose(hi, [2, 5, 8])
    with pytest.raises(ValueError):
        norms.xiong_bounds(-1, 10)
    with pytest.raises(ValueError):
        norms.xiong_bounds(1, 0)


def test_stream_jacobian_identity_component():
    x0 = torch.randn(16)
    pre = NormGPT(replace(SMALL, norm="pre", n_layers=4), seed=0)
    J = norms.stream_jacobian(pre, x0)
    assert J.shape == (16, 16)
    # vectors are rows: a small step dx moves h_L by dx @ J
    dx = 1e-3 * torch.randn(16)
    with torch.no_grad():
        f = lambda v: pre.forward_stream(v.view(1, 1, 16)).view(16)  # noqa: E731
        assert torch.allclose(f(x0 + dx) - f(x0), dx @ J, atol=2e-5)
    post = NormGPT(replace(SMALL, norm="post", n_layers=4), seed=0)
    assert abs(torch.trace(J).item() / 16 - 1) < abs(torch.trace(norms.stream_jacobian(post, x0)).item() / 16 - 1)
    with pytest.raises(ValueError):
        norms.stream_jacobian(pre, torch.randn(15))


def test_ffn_grad_norms_shape_and_validation():
    m = NormGPT(SMALL, seed=0)
    g = norms.ffn_grad_norms(m, torch.randint(0, 20, (2, 8)))
    assert g.shape == (3,) and np.all(g > 0)
    assert all(p.grad is None for p in m.parameters())  # leaves the model clean
    with pytest.raises(ValueError):
        norms.ffn_grad_norms(m, torch.randint(0, 20, (2, 8)), which="W_Q")
    with pytest.raises(ValueError):
        norms.ffn_grad_norms(m, torch.randint(0, 20, (8,)))


# ---------------------------------------------------------------- data and training
def test_char_data_roundtrip_and_validation():
    data = norms.char_data(n_docs=50, seed=0)
    assert data.vocab_size == len(set(data.chars)) and len(data.val) > 0
    text = data.decode(data.train[:200])
    assert len(text) == 200 and all(c in data.chars for c in text)
    with pytest.raises(ValueError):
        norms.char_data(n_docs=2)


def test_train_lm_learns_and_is_reproducible():
    data = norms.char_data(n_docs=100, seed=0)
    cfg = NormConfig(norm="pre", n_layers=2, d_model=32, n_heads=2, d_mlp=32, n_ctx=32, d_vocab=data.vocab_size)
    a = norms.train_lm(cfg, data, steps=40, lr=3e-3, batch_size=8, seq_len=32, seed=0)
    b = norms.train_lm(cfg, data, steps=40, lr=3e-3, batch_size=8, seq_len=32, seed=0)
    assert np.array_equal(a["losses"], b["losses"])
    assert a["losses"][-5:].mean() < a["losses"][:5].mean() - 0.5
    assert math.isfinite(a["val_loss"]) and not a["diverged"]
    with pytest.raises(ValueError, match="warmup"):
        norms.train_lm(cfg, data, steps=10, warmup=11, seq_len=32)
    with pytest.raises(ValueError, match="d_vocab"):
        norms.train_lm(replace(cfg, d_vocab=5), data, steps=1, seq_len=32)


# ---------------------------------------------------------------- figures
def test_figures_build():
    data = norms.char_data(n_docs=50, seed=0)
    toks = data.train[:64].view(2, 32)
    prof = norms.depth_profiles([1, 2], d_model=16, n_seeds=1, tokens=toks, n_heads=2, d_vocab=data.vocab_size)
    fig = norms.depth_slider_figure(prof)
    assert len(fig.data) == 6 and len(fig.layout.sliders[0].steps) == 2
    fig2 = norms.loss_curves_figure({"a": np.ones((2, 10)), "b": np.zeros((2, 10))})
    assert len(fig2.data) == 4
    with pytest.raises(ValueError):
        norms.depth_slider_figure({"depths": []})
    with pytest.raises(ValueError):
        norms.loss_curves_figure({"a": np.ones(10)})
    with pytest.raises(ValueError):
        norms.depth_profiles([2], tokens=None)


# ---------------------------------------------------------------- checkers
def _stub(*args, **kwargs):
    raise NotImplementedError


def test_check_xiong_bounds():
    assert norms.check_xiong_bounds(_stub) is False
    assert norms.check_xiong_bounds(lambda l, d: ((1 + l / 2) * d, (1 + 3 * l / 2) * d)) is True
    with pytest.raises(CheckFailed, match="1·d"):
        norms.check_xiong_bounds(lambda l, d: (l / 2 * d, 3 * l / 2 * d))
    with pytest.raises(CheckFailed, match="lower bound"):
        norms.check_xiong_bounds(lambda l, d: ((1 + 3 * l / 2) * d, (1 + l / 2) * d))
    with pytest.raises(CheckFailed):
        norms.check_xiong_bounds(lambda l, d: ((1 + l) * d, (1 + 3 * l) * d))


def test_check_deepnorm_block_update():
    assert norms.check_deepnorm_block_update(_stub) is False
    assert norms.check_deepnorm_block_update(norms.deepnorm_block_update) is True

    def alpha_on_branch(x, attn, mlp, ln1, ln2, alpha):
        x = ln1(x + alpha * attn(x))
        return ln2(x + alpha * mlp(x))

    def plain_post_ln(x, attn, mlp, ln1, ln2, alpha):
        x = ln1(x + attn(x))
        return ln2(x + mlp(x))

    with pytest.raises(CheckFailed, match="stream"):
        norms.check_deepnorm_block_update(alpha_on_branch)
    with pytest.raises(CheckFailed):
        norms.check_deepnorm_block_update(plain_post_ln)


def test_check_loglog_slope():
    assert norms.check_loglog_slope(_stub) is False
    assert norms.check_loglog_slope(norms.loglog_slope) is True
    with pytest.raises(CheckFailed, match="logarithms"):
        norms.check_loglog_slope(lambda d, v: float(np.polyfit(d, v, 1)[0]))
    with pytest.raises(CheckFailed):
        norms.check_loglog_slope(lambda d, v: float(np.polyfit(np.log(d), v, 1)[0]))
    assert abs(norms.loglog_slope([1, 4, 16], [1, 0.5, 0.25]) + 0.5) < 1e-9
