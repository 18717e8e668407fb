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
    toks = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    both = norms.ffn_grad_norms(m, toks, which="both")  # one backward pass, rows W_in and W_out
    assert both.shape == (2, 3)
    assert np.allclose(both[0], norms.ffn_grad_norms(m, toks, which="W_in"))
    assert np.allclose(both[1], norms.ffn_grad_norms(m, toks, which="W_out"))
    assert not np.allclose(both[0], both[1])
    with pytest.raises(ValueError):
        norms.ffn_grad_norms(m, torch.randint(0, 20, (2, 8)), which="W_Q")
    with pytest.raises(ValueError):
        norms.ffn_grad_norms(m, torch.randint(0, 20, (8,)))


def test_gpt2_init_scales_only_the_residual_output_projections():
    L = 6
    plain = NormGPT(NormConfig(n_layers=L, init_std=0.02), seed=0)
    gpt2 = NormGPT(NormConfig(n_layers=L, init_std=0.02, scale_resid=True), seed=0)
    for name, p in gpt2.named_parameters():
        q = dict(plain.named_parameters())[name]
        if name.endswith(("attn.W_O.weight", "mlp.W_out.weight")):
            assert torch.allclose(p, q / math.sqrt(2 * L))  # same draw, scaled by 1/√N with N = 2L
        else:
            assert torch.equal(p, q)
    with pytest.raises(TypeError, match="scale_resid"):
        NormConfig(scale_resid=1)


def test_write_norms_add_up_to_the_stream_and_refuse_post_ln():
    m = NormGPT(replace(SMALL, norm="pre"), seed=1)
    x = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(0))
    w = norms.write_norms(m, x)
    assert w.shape == (3, 2) and np.all(w > 0)
    cache = norms.stream_cache(m, x)
    a = cache["blocks.0.hook_resid_mid"] - cache["blocks.0.hook_resid_pre"]
    assert math.isclose(w[0, 0], float(a.pow(2).sum(-1).mean()) / 16, rel_tol=1e-6)
    with pytest.raises(ValueError, match="pre-LN"):
        norms.write_norms(NormGPT(replace(SMALL, norm="post"), seed=0), x)


def test_ln_input_norms_reproduce_xiong_lemma_2_and_fail_outside_it():
    def post_ln2(d_mlp):
        return np.mean([norms.ln_input_norms(NormGPT(NormConfig(norm="post", n_layers=4, d_mlp=d_mlp), seed=k),
                                             torch.randn(8, 16, 64, generator=torch.Generator().manual_seed(k)))[:, 1]
                        for k in range(4)])
    assert abs(post_ln2(64) - 1.5) < 0.05  # Lemma 2, post-LN: 3d/2
    assert abs(post_ln2(256) - 1.5) > 0.1  # a wider MLP breaks assumption 2: the same check fails
    pre = NormGPT(NormConfig(norm="pre", n_layers=3), seed=0)
    x = torch.randn(4, 8, 64)
    got = norms.ln_input_norms(pre, x)
    assert got.shape == (3, 2)
    assert math.isclose(got[0, 0], float(x.pow(2).sum(-1).mean()) / 64, rel_tol=1e-6)  # pre-LN's ln1 reads h_0


def test_mlp_write_theory():
    assert norms.mlp_write(64, 64) == 0.5
    assert math.isclose(norms.mlp_write(64, 256), 0.32)
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0)) * math.sqrt(64 * 2 / 320)
    mc = 256 * (2 / 320) * float(torch.nn.functional.gelu(z).pow(2).mean())
    assert abs(norms.mlp_write(64, 256, "gelu") - mc) < 0.003
    with pytest.raises(ValueError):
        norms.mlp_write(64, 0)
    with pytest.raises(ValueError):
        norms.mlp_write(64, 64, "tanh")


def test_post_ln_identity_theory_and_a_measurement():
    assert math.isclose(norms.post_ln_identity_theory(1), 3 ** -0.5)
    assert math.isclose(norms.post_ln_identity_theory(4), 1 / 9)
    assert norms.solution_deepnorm_identity(10.0, 3) > 0.97  # a large α acts like an identity path
    with pytest.raises(TypeError):  # the public helper does not hand exercise 4 its answer
        norms.post_ln_identity_theory(3, 10.0)
    x0 = torch.randn(64, generator=torch.Generator().manual_seed(3))
    x0 = (x0 - x0.mean()) / x0.std(unbiased=False)
    vals = [torch.trace(norms.stream_jacobian(NormGPT(NormConfig(norm="post", n_layers=1), seed=s), x0)).item() / 64
            for s in range(8)]
    assert abs(np.mean(vals) - norms.post_ln_identity_theory(1)) < 0.06
    with pytest.raises(ValueError):
        norms.post_ln_identity_theory(-1)
    with pytest.raises(ValueError):
        norms.solution_deepnorm_identity(0.0, 2)


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


def test_train_arms_gives_the_runs_train_lm_gives():
    """The batched trainer is a faster way to get the same runs: same weights, batches, schedule and Adam."""
    data = norms.char_data(n_docs=100, seed=0)
    cfg = NormConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=32, n_ctx=32, d_vocab=data.vocab_size)
    arms = {"post, warmup": ("post", 3e-3, 10), "pre, constant": ("pre", 1e-3, 0), "pre, warmup": ("pre", 3e-3, 10)}
    runs = norms.train_arms(cfg, data, arms, seeds=(0, 1), steps=25, batch_size=8, seq_len=32)
    assert list(runs) == list(arms) and all(len(r) == 2 for r in runs.values())
    for name, (norm, lr, warmup) in arms.items():
        for i, seed in enumerate((0, 1)):
            one = norms.train_lm(replace(cfg, norm=norm), data, steps=25, lr=lr, warmup=warmup, batch_size=8,
                                 seq_len=32, seed=seed)
            np.testing.assert_allclose(runs[name][i]["losses"], one["losses"], rtol=0, atol=1e-4)
            assert abs(runs[name][i]["val_loss"] - one["val_loss"]) < 1e-4 and not runs[name][i]["diverged"]
    # a broken trainer (one arm's learning rate applied to all) would be caught: the arms really differ
    assert abs(runs["pre, constant"][0]["losses"][-1] - runs["pre, warmup"][0]["losses"][-1]) > 1e-3
    with pytest.raises(ValueError, match="arms"):
        norms.train_arms(cfg, data, {"x": ("mid", 1e-3, 0)}, steps=2)
    with pytest.raises(ValueError, match="d_vocab"):
        norms.train_arms(replace(cfg, d_vocab=5), data, arms, steps=2)


# ---------------------------------------------------------------- figures
def test_figures_build():
    data = norms.char_data(n_docs=50, seed=0)
    toks = data.train[:64].view(2, 32)
    prof = norms.depth_profiles([1, 2], d_model=16, n_seeds=1, tokens=toks, n_heads=2, d_vocab=data.vocab_size)
    assert prof["grad_seeds"]["pre"][1].shape == (1, 2)  # (seeds, layers) at depth 2
    fig = norms.depth_slider_figure(prof)
    assert len(fig.data) == 6 and len(fig.layout.sliders[0].steps) == 2
    assert len(fig.layout.title.text) <= 60 and not fig.layout.annotations  # short title, no subplot titles to collide
    assert fig.layout.legend.y > 1 and fig.layout.sliders[0].y < 0  # legend above the plots, slider below
    assert fig.layout.meta["view"] == "2"  # the declared opening view is the active slider step (depth 2)
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
    with pytest.raises(CheckFailed, match="post-LN"):
        norms.check_xiong_bounds(lambda l, d: (1.5 * d, 1.5 * d))
    with pytest.raises(CheckFailed, match="pair"):
        norms.check_xiong_bounds(lambda l, d: (1 + l / 2) * d)
    with pytest.raises(CheckFailed):  # an unlisted wrong answer
        norms.check_xiong_bounds(lambda l, d: ((1 + l) * d, (1 + 3 * l) * d))


def _check_value_checker(check, right, named_wrongs, unlisted):
    """A value checker: ... is not attempted, the right value passes, each typical wrong value is named."""
    assert check(...) is False
    assert check(right) is True
    for value, words in named_wrongs:
        with pytest.raises(CheckFailed, match=words):
            check(value)
    with pytest.raises(CheckFailed):
        check(unlisted)


def test_check_post_ln_input_prediction():
    _check_value_checker(norms.check_post_ln_input, 1.375, [(1.5, "d_mlp = d"), (1.0, "output"), (5.0, "depth"),
                                                            (1.32, "four times wider"), (2.5, "by the width")], 2.0)


def test_post_ln_input_solution_matches_a_measurement():
    """The exercise's answer is what the model does: block 8's MLP LayerNorm input, d_mlp = 3d."""
    s = norms.POST_LN_INPUT_SETTING
    got = np.array([norms.ln_input_norms(NormGPT(NormConfig(norm="post", n_layers=s["n_layers"], d_model=s["d_model"],
                                                            d_mlp=s["d_mlp"]), seed=k),
                                         torch.randn(16, 32, 64, generator=torch.Generator().manual_seed(k))).mean(0)[1]
                    for k in range(8)])  # every block's MLP LayerNorm: the answer does not depend on the block
    se = got.std(ddof=1) / np.sqrt(len(got))
    assert abs(got.mean() - norms.solution_post_ln_input()) < 3 * se
    assert abs(got.mean() - 1.5) > 3 * se  # the lemma's 3/2 (d_mlp = d) is really wrong here


def test_check_wide_mlp_std_prediction():
    _check_value_checker(norms.check_wide_mlp_std, 0.0884, [(0.125, "d_mlp = d"), (1 / 16, "both widths"),
                                                            (math.sqrt(2 / 320), "Xavier"), (0.02, "GPT-2")], 0.3)


def test_wide_mlp_std_solution_gives_the_lemmas_write_and_the_mistakes_do_not():
    s = norms.WIDE_MLP_SETTING

    def mlp_write(std):
        return np.mean([norms.write_norms(NormGPT(NormConfig(norm="pre", n_layers=2, d_model=s["d_model"], d_mlp=s["d_mlp"],
                                                             init_std=std), seed=k),
                                          torch.randn(8, 16, 64, generator=torch.Generator().manual_seed(k)))[:, 1].mean()
                        for k in range(4)])

    assert abs(mlp_write(norms.solution_wide_mlp_std(64, 256)) - 0.5) < 0.05
    assert abs(mlp_write(0.125) - 2.0) < 0.2  # 1/√d: four times too large
    assert mlp_write(0.02) < 0.01


def test_check_deepnorm_identity():
    assert norms.check_deepnorm_identity(_stub) is False
    assert norms.check_deepnorm_identity(norms.solution_deepnorm_identity) is True
    with pytest.raises(CheckFailed, match="ignored"):
        norms.check_deepnorm_identity(lambda a, L: 3 ** (-L / 2))
    with pytest.raises(CheckFailed, match="once per block"):
        norms.check_deepnorm_identity(lambda a, L: (a / math.sqrt((a * a + 1) * (a * a + 0.5))) ** L)
    with pytest.raises(CheckFailed):
        norms.check_deepnorm_identity(lambda a, L: 0.5 ** L)


def test_loglog_slope():
    assert abs(norms.loglog_slope([1, 4, 16], [1, 0.5, 0.25]) + 0.5) < 1e-9
    assert abs(norms.loglog_slope([2, 4, 8], [3, 3, 3])) < 1e-9


def _fake_profiles(batch_in=-0.3, batch_out=-0.42, pos=-0.5, depths=(2, 4, 8, 16)):
    """Profiles with known exponents: last-layer batch gradients ∝ L^batch_*, per-position ones ∝ L^pos."""
    def last(L, p):
        return np.array([[1.0] * (L - 1) + [L ** p * (1 + 0.01 * s)] for s in range(3)])
    return {"depths": list(depths),
            "grad_seeds": {n: [last(L, batch_out) for L in depths] for n in ("pre", "post")},
            "grad_in_seeds": {n: [last(L, batch_in) for L in depths] for n in ("pre", "post")},
            "grad_pos_seeds": {n: [np.array([[L ** pos, 2 * L ** pos]] * 3) for L in depths] for n in ("pre", "post")}}


def test_last_layer_exponents_and_the_position_checker():
    fake = _fake_profiles()
    assert np.allclose(norms.last_layer_exponents(fake, "pre", "W_in"), -0.3)
    assert np.allclose(norms.last_layer_exponents(fake, "pre", "W_out"), -0.42)
    assert np.allclose(norms.last_layer_exponents(fake, "pre", "W_in", "per_position"), -0.5)
    assert norms.check_position_exponent(..., fake) is False
    assert norms.check_position_exponent(-0.5, fake) is True
    assert norms.check_position_exponent(-0.46, fake) is True  # within 0.05
    with pytest.raises(CheckFailed, match="batch's exponent"):  # the checker grades on the profiles it is given
        norms.check_position_exponent(-0.42, fake)
    assert norms.check_position_exponent(-0.42, _fake_profiles(pos=-0.43)) is True
    with pytest.raises(CheckFailed, match="shielded"):
        norms.check_position_exponent(0.0, fake)
    with pytest.raises(CheckFailed, match="once, not twice"):
        norms.check_position_exponent(-1.0, fake)
    with pytest.raises(CheckFailed, match="the sign"):
        norms.check_position_exponent(0.5, fake)
    with pytest.raises(CheckFailed):
        norms.check_position_exponent(-0.6, fake)
    with pytest.raises(ValueError):
        norms.last_layer_exponents({"depths": [2, 4]}, "pre")
    with pytest.raises(ValueError):
        norms.last_layer_exponents(fake, "pre", "W_in", "per_token")


def test_per_position_gradient_is_each_positions_own_loss():
    """depth_profiles' per-position norm equals the mean over positions of ‖∂loss_t/∂W‖ computed one loss at a time."""
    m = NormGPT(SMALL, seed=1)
    toks = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(3))
    rec = norms._grad_record(m, toks)
    own = {w: [] for w in ("W_in", "W_out")}
    for b in range(2):
        for t in range(5):
            m.zero_grad(set_to_none=True)
            logits = m(toks[:, :-1])
            torch.nn.functional.cross_entropy(logits[b, t][None], toks[b, t + 1][None]).backward()
            for w in own:
                own[w].append(float(getattr(m.blocks[-1].mlp, w).weight.grad.norm()))
    assert np.allclose(rec["per_position"], [np.mean(own["W_in"]), np.mean(own["W_out"])], rtol=1e-4)
    assert np.allclose(rec["batch"], norms.ffn_grad_norms(m, toks, which="both"))
    # the batch gradient is the mean of the per-position ones: smaller than their mean norm unless all align
    assert np.all(rec["batch"][:, -1] < rec["per_position"])
    assert -1.0 <= rec["align"] <= 1.0
    assert all(p.grad is None for p in m.parameters())
