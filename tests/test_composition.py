"""helpers.composition: circuits, composition scores, induction scores, figures, tiny models, checkers."""
import math

import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F

from helpers import composition as comp
from helpers import core
from helpers.exercises import CheckFailed

from conftest import make_tokenizer


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small randomly initialised 2-layer attention-only bridge (TransformerLens native)."""
    from transformer_lens.model_bridge import TransformerBridge
    import transformer_lens.model_bridge.sources.native  # noqa: F401

    from helpers.zoo.modeling import native_config
    from helpers.zoo.tokenizer import load_tokenizer_from

    folder = tmp_path_factory.mktemp("tok")
    make_tokenizer(folder)
    tok = load_tokenizer_from(folder)
    cfg = native_config(len(tok), 2, 32, 4, 64, seed=0)
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tok, device="cpu")
    bridge.enable_compatibility_mode()
    bridge.eval()
    return bridge


# ------------------------------------------------------------------ circuits and scores
def test_circuits_are_the_weight_products(model):
    ov, qk = comp.ov_circuit(model, 0, 1), comp.qk_circuit(model, 1, 2)
    assert torch.allclose(ov.AB, model.W_V[0, 1] @ model.W_O[0, 1])
    assert torch.allclose(qk.AB, model.W_Q[1, 2] @ model.W_K[1, 2].T)
    with pytest.raises(ValueError, match="layer"):
        comp.ov_circuit(model, 2, 0)
    with pytest.raises(ValueError, match="head"):
        comp.qk_circuit(model, 0, 4)


def test_composition_score_bounds_and_extremes():
    a = torch.zeros(4, 4)
    a[0, 0] = 1.0
    assert comp.composition_score(a, a) == pytest.approx(1.0)
    b = torch.zeros(4, 4)
    b[1, 1] = 1.0
    assert comp.composition_score(a, b) == pytest.approx(0.0)  # writes where the reader does not read
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        s = comp.composition_score(torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g))
        assert 0 <= s <= 1
    with pytest.raises(ValueError, match="matrices"):
        comp.composition_score(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(TypeError):
        comp.composition_score([[1.0]], torch.ones(1, 1))


@pytest.mark.parametrize("mode", comp.MODES)
def test_composition_scores_match_dense_and_transformer_lens(model, mode):
    ours = comp.composition_scores(model, mode, 0, 1)
    assert ours.shape == (model.cfg.n_heads, model.cfg.n_heads)
    tl = model.all_composition_scores(mode).scores[0, :, 1, :]
    assert torch.allclose(ours, tl.float(), atol=1e-5)
    reader = {"Q": comp.qk_circuit(model, 1, 3), "K": comp.qk_circuit(model, 1, 3).T,
              "V": comp.ov_circuit(model, 1, 3)}[mode]
    assert float(ours[2, 3]) == pytest.approx(comp.composition_score(comp.ov_circuit(model, 0, 2), reader), abs=1e-5)


def test_composition_scores_validate(model):
    with pytest.raises(ValueError, match="mode"):
        comp.composition_scores(model, "X", 0, 1)
    with pytest.raises(ValueError, match="src_layer < dst_layer"):
        comp.composition_scores(model, "K", 1, 1)
    with pytest.raises(ValueError, match="dst_layer"):
        comp.composition_scores(model, "K", 0, 5)


def test_random_baseline_is_one_over_sqrt_d():
    s = comp.random_composition_baseline(64, 16, "K", n_samples=300, seed=1)
    assert s.shape == (300,)
    rms = float(s.pow(2).mean().sqrt())
    assert rms == pytest.approx(1 / math.sqrt(64), rel=0.03)
    assert torch.equal(s, comp.random_composition_baseline(64, 16, "K", n_samples=300, seed=1))  # seeded
    with pytest.raises(ValueError, match="d_head"):
        comp.random_composition_baseline(8, 16)
    with pytest.raises(ValueError, match="mode"):
        comp.random_composition_baseline(8, 2, mode="q")
    with pytest.raises(ValueError, match="n_samples"):
        comp.random_composition_baseline(8, 2, n_samples=0)


# ------------------------------------------------------------------ behaviour of heads
def test_repeated_random_tokens(model):
    toks = comp.repeated_random_tokens(model, n_seqs=3, length=7, seed=4)
    assert toks.shape == (3, 15)
    assert (toks[:, 0] == model.tokenizer.bos_token_id).all()
    assert torch.equal(toks[:, 1:8], toks[:, 8:])
    assert not set(toks[:, 1:].flatten().tolist()) & set(model.tokenizer.all_special_ids)
    assert comp.repeated_random_tokens is core.repeated_random_tokens  # one draw for chapters 0 and 5
    with pytest.raises(ValueError, match="context"):
        comp.repeated_random_tokens(model, length=40)
    with pytest.raises(ValueError, match="n_seqs"):
        comp.repeated_random_tokens(model, n_seqs=0)


def test_per_token_loss_is_cross_entropy(model):
    toks = comp.repeated_random_tokens(model, n_seqs=2, length=5)
    logits = model(toks)
    want = F.cross_entropy(logits[:, :-1].transpose(1, 2), toks[:, 1:], reduction="none")
    assert torch.allclose(comp.per_token_loss(logits, toks), want, atol=1e-5)
    with pytest.raises(ValueError, match="logits"):
        comp.per_token_loss(logits[0], toks)


def _ideal_patterns(length: int) -> torch.Tensor:
    """[2 layers, 1, 2 heads, T, T]: L0H0 attends to t-1, L1H1 does perfect induction on BOS + R + R."""
    t = 1 + 2 * length
    p = torch.zeros(2, 1, 2, t, t)
    p[..., 0, 0] = 1.0
    for q in range(1, t):
        p[0, 0, 0, q, q - 1] = 1.0
        p[0, 0, 1, q, q] = 1.0
        p[1, 0, 0, q, 0] = 1.0
        p[1, 0, 1, q, q - length + 1 if q > length else 0] = 1.0
    return p


def test_previous_token_and_prefix_matching_scores():
    p = _ideal_patterns(6)
    prev = comp.previous_token_scores(p)
    pm = comp.prefix_matching_scores(p, 6)
    assert prev.shape == pm.shape == (2, 2)
    assert float(prev[0, 0]) == 1.0 and float(prev[0, 1]) == 0.0
    assert float(pm[1, 1]) == 1.0 and float(pm[0, 0]) == 0.0 and float(pm[1, 0]) == 0.0
    with pytest.raises(ValueError, match="1 \\+ 2\\*length"):
        comp.prefix_matching_scores(p, 5)
    with pytest.raises(ValueError, match="n_layers, batch, n_heads"):
        comp.previous_token_scores(p[0])


def test_attention_patterns_shape_and_rows_sum_to_one(model):
    toks = comp.repeated_random_tokens(model, n_seqs=2, length=4)
    pats = comp.attention_patterns(model, toks)
    assert pats.shape == (2, 2, 4, 9, 9)
    assert torch.allclose(pats.sum(-1), torch.ones(2, 2, 4, 9), atol=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        comp.attention_patterns(model, toks[0])


# ------------------------------------------------------------------------- figures, log
def test_figures_have_kernel_free_controls():
    fig = comp.attention_pattern_figure({"a": torch.eye(3), "b": torch.ones(3, 3) / 3}, ["x", "y", "z"], "t", active=1)
    assert isinstance(fig, go.Figure) and len(fig.layout.updatemenus[0].buttons) == 2
    with pytest.raises(ValueError, match="shape"):
        comp.attention_pattern_figure({"a": torch.eye(2)}, ["x", "y", "z"], "t")
    s = {m: torch.rand(3, 3) for m in comp.MODES}
    fig = comp.composition_heatmap_figure(s, 0, 1, baseline=0.1, title="t")
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["Q-composition", "K-composition", "V-composition"]
    with pytest.raises(ValueError):
        comp.composition_heatmap_figure({"W": torch.rand(2, 2)}, 0, 1, 0.1, "t")
    fig = comp.score_grid_figure({"a": torch.rand(2, 3), "b": torch.rand(2, 3)}, "t")
    assert len(fig.layout.updatemenus[0].buttons) == 2
    with pytest.raises(ValueError, match="labels"):
        comp.score_grid_figure({"a": torch.rand(2, 3)}, "t", x_labels=["1"])


def _log():
    pm = [0.01, 0.01, 0.02, 0.3, 0.5, 0.55]
    return [{"step": 10 * i, "train_loss": 5 - i * 0.1, "icl_score": -0.1 * i, "best_prefix_matching": v}
            for i, v in enumerate(pm)]


def test_induction_formation_step_and_phase_figure():
    log = _log()
    assert comp.induction_formation_step(log) == 30  # first step past half of the rise 0.01 -> 0.55
    assert comp.induction_formation_step(log, frac=0.9) == 40
    with pytest.raises(ValueError, match="frac"):
        comp.induction_formation_step(log, frac=1.5)
    with pytest.raises(ValueError, match="key"):
        comp.induction_formation_step([{"step": 0}])
    fig = comp.phase_change_figure(log, 30, "t", window=(20, 40))
    assert len(fig.data) == 3 and len(fig.layout.shapes) == 6  # a line and a shaded window per panel
    with pytest.raises(ValueError, match="window"):
        comp.phase_change_figure(log, 30, "t", window=(40, 20))
    with pytest.raises(ValueError, match="keys"):
        comp.phase_change_figure([{"step": 0}], 0, "t")


def test_training_log_rejects_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        comp.training_log("no-such-model")


def test_log_and_phase_figure_are_shared_with_chapter_0():
    from helpers import organisms

    assert comp.training_log is organisms.training_log and comp.phase_change_figure is organisms.phase_change_figure
    full = comp.training_log("rs-attn-2l", full=True)
    assert full["log"] == comp.training_log("rs-attn-2l") and "icl_definition" in full
    fig = comp.phase_change_figure(full["log"], 100)  # chapter 0's call: corpus loss panel, default title
    assert fig.layout.annotations[0].text.startswith("loss on held-out") and "step 100" in fig.layout.title.text


# ------------------------------------------------------------------------ tiny models
def test_induction_task_batch_repeats_one_span():
    g = torch.Generator().manual_seed(0)
    toks, pred = comp.induction_task_batch(8, 20, 24, 3, 10, g)
    assert toks.shape == (8, 24) and pred.shape == (8, 23)
    assert (toks[:, 0] == 0).all() and (toks[:, 1:] > 0).all()
    for row, mask in zip(toks, pred):
        idx = mask.nonzero().flatten() + 1          # positions of predictable tokens
        span = len(idx) + 1
        assert 3 <= span <= 10
        assert torch.equal(row[idx], row[idx - span])  # each equals the token one span earlier
    with pytest.raises(ValueError, match="max_span"):
        comp.induction_task_batch(2, 20, 10, 3, 6, g)


def test_train_attn_only_runs_and_restores_threads():
    threads = torch.get_num_threads()
    model, hist = comp.train_attn_only(2, steps=30, eval_every=10, seed=0)
    assert torch.get_num_threads() == threads
    assert [h["step"] for h in hist] == [0, 10, 20, 30]
    assert hist[-1]["loss_other"] < hist[0]["loss_other"]  # it learns something in 30 steps
    logits, pats = model(torch.zeros(1, 5, dtype=torch.long), return_patterns=True)
    assert logits.shape == (1, 5, 48) and len(pats) == 2 and pats[0].shape == (1, 2, 5, 5)
    with pytest.raises(ValueError, match="n_layers"):
        comp.train_attn_only(0)


# --------------------------------------------------------------------------- checkers
def test_k_composition_checker():
    assert comp.check_k_composition_score(comp.solution_k_composition_score)

    def q_composition(W_V1, W_O1, W_Q2, W_K2):  # the classic slip: no transpose
        ov, qk = W_V1 @ W_O1, W_Q2 @ W_K2.T
        return float(torch.linalg.norm(ov @ qk) / (torch.linalg.norm(ov) * torch.linalg.norm(qk)))

    with pytest.raises(CheckFailed, match="Q-composition"):
        comp.check_k_composition_score(q_composition)

    def unnormalised(W_V1, W_O1, W_Q2, W_K2):
        return float(torch.linalg.norm((W_V1 @ W_O1) @ (W_Q2 @ W_K2.T).T))

    with pytest.raises(CheckFailed):
        comp.check_k_composition_score(unnormalised)

    def stub(*args):
        raise NotImplementedError

    assert comp.check_k_composition_score(stub) is False


def test_prefix_matching_checker(model):
    assert comp.check_prefix_matching_score(comp.solution_prefix_matching_score, model)

    def no_gap(pattern, length, gap):   # the chapter's BOS + R + R formula, copied unchanged
        q = torch.arange(length + 1, 2 * length + 1)
        return float(pattern[:, q, q - length + 1].mean())

    with pytest.raises(CheckFailed, match="kept the formula for BOS"):
        comp.check_prefix_matching_score(no_gap)

    def duplicate_token(pattern, length, gap):
        q = torch.arange(1 + length + gap, 1 + 2 * length + gap)
        return float(pattern[:, q, q - length - gap].mean())

    with pytest.raises(CheckFailed, match="earlier occurrence itself"):
        comp.check_prefix_matching_score(duplicate_token)

    def whole_sequence(pattern, length, gap):
        q = torch.arange(length + gap, 1 + 2 * length + gap)
        return float(pattern[:, q, q - length - gap + 1].mean())

    with pytest.raises(CheckFailed):
        comp.check_prefix_matching_score(whole_sequence)


def test_gapped_tokens_repeat_after_the_gap():
    import helpers

    m = helpers.load_model("rs-attn-2l", device="cpu")
    toks = comp._gapped_tokens(m, 6, 3, seed=0)
    assert toks.shape == (2, 1 + 2 * 6 + 3)
    assert torch.equal(toks[:, 1:7], toks[:, 10:16])           # R, then G, then R again
    assert not torch.equal(toks[:, 7:10], toks[:, 1:4])


def test_head_ablation_checker():
    assert comp.check_head_ablation_effects(comp.solution_head_ablation_effects)

    def flipped(m, tokens, length):
        return -comp.solution_head_ablation_effects(m, tokens, length)

    with pytest.raises(CheckFailed, match="signs"):
        comp.check_head_ablation_effects(flipped)

    def effects_from(start, ablate):   # a reader's loop, written out: loss from `start` on, one head replaced
        @torch.no_grad()
        def fn(m, tokens, length):
            def loss(hooks):
                return float(comp.per_token_loss(m.run_with_hooks(tokens, fwd_hooks=hooks), tokens)[:, start(length):].mean())
            _, cache = m.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
            base, out = loss([]), torch.zeros(m.cfg.n_layers, m.cfg.n_heads)
            for l in range(m.cfg.n_layers):
                for h in range(m.cfg.n_heads):
                    value = ablate(cache[f"blocks.{l}.attn.hook_z"][:, :, h])
                    def hook(z, hook=None, h=h, value=value):
                        z[:, :, h] = value
                        return z
                    out[l, h] = loss([(f"blocks.{l}.attn.hook_z", hook)]) - base
            return out
        return fn

    zero, mean = (lambda z: 0.0), (lambda z: z.mean((0, 1)))
    assert comp.check_head_ablation_effects(effects_from(lambda n: n + 1, zero))   # the written-out loop is right
    with pytest.raises(CheckFailed, match="second copy"):
        comp.check_head_ablation_effects(effects_from(lambda n: 0, zero))
    with pytest.raises(CheckFailed, match="first token of the second copy"):
        comp.check_head_ablation_effects(effects_from(lambda n: n, zero))
    with pytest.raises(CheckFailed, match="mean ablation"):
        comp.check_head_ablation_effects(effects_from(lambda n: n + 1, mean))


def test_prediction_checkers_use_the_chapters_measurement(capsys):
    second = {(0, 0): 7.4, (0, 1): 0.6, (0, 2): 0.65, (0, 3): 4.2}
    partners = [(0, 3), (0, 1), (0, 2)]
    assert comp.check_layer0_prediction((0, 0), second, partners, (0, 0))
    assert comp.check_layer0_prediction([0, 0], second, partners, (0, 0))      # a list is read as a tuple
    with pytest.raises(CheckFailed, match="strongest previous-token head"):
        comp.check_layer0_prediction((0, 3), second, partners, (0, 0))
    with pytest.raises(CheckFailed, match="costs the \\*least"):
        comp.check_layer0_prediction((0, 1), {**second, (0, 1): 0.1}, [(0, 3), (0, 2), (0, 1)], (0, 0))
    # the answer follows the measurement: on another outcome another head is right
    assert comp.check_layer0_prediction((0, 3), {**second, (0, 3): 9.0}, partners, (0, 0))
    assert comp.check_layer0_prediction(..., second, partners, (0, 0)) is False

    paths = {"Q": (7.6, 6.5), "K": (7.6, 0.1), "V": (7.6, 2.6), "direct": (7.6, 0.02)}
    assert comp.check_reading_path(" q ", paths)
    with pytest.raises(CheckFailed, match="previous"):
        comp.check_reading_path("K", paths)
    with pytest.raises(CheckFailed, match="queries costs more"):   # V, where Q is measurably larger
        comp.check_reading_path("V", paths)
    assert comp.check_reading_path("V", {**paths, "V": (7.6, 7.0)})
    assert comp.check_reading_path("Q", None) is False
    assert "no separate query/key/value hooks" in capsys.readouterr().out


def _routes(q, v, q_runs, v_runs):
    """Path losses with per-batch second-copy losses (as resampled_path_losses returns them)."""
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)
    return {"Q": (7.6, q, t(q_runs)), "K": (7.6, 0.25, t([0.2, 0.3, 0.25])), "V": (7.6, v, t(v_runs)),
            "direct": (7.6, 0.05, t([0.05, 0.05, 0.05]))}


def test_reading_path_accepts_any_route_within_the_measured_tie(capsys):
    # the chapter's outcome: V above Q by less than two standard errors of the paired difference over batches
    tied = _routes(6.61, 6.76, [6.51, 6.67, 6.65], [6.92, 6.74, 6.63])
    t = comp.route_tie(tied)
    assert str(t) == "V" and t.near == {"Q", "V"} and t.margin == pytest.approx(0.15)
    assert comp.check_reading_path("Q", tied) and comp.check_reading_path("V", tied)
    assert "cannot separate Q and V" in capsys.readouterr().out      # the checker says it accepted a tie
    with pytest.raises(CheckFailed, match="previous"):
        comp.check_reading_path("K", tied)
    # the same means with a consistent gap in every batch: no tie, and Q is named as the misconception it is
    apart = _routes(6.0, 6.9, [6.0, 6.1, 5.9], [6.9, 7.0, 6.8])
    assert comp.route_tie(apart).near == {"V"}
    assert comp.check_reading_path("V", apart)
    assert "cannot separate" not in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="values costs more"):
        comp.check_reading_path("Q", apart)
    with pytest.raises(CheckFailed, match="give one of"):
        comp.check_reading_path("W", apart)
    # without per-batch losses there is no spread: only the top route passes
    assert comp.route_tie({k: v[:2] for k, v in tied.items()}).near == {"V"}
    with pytest.raises(ValueError, match="no entry"):
        comp.route_tie({"Q": (7.6, 1.0)})

    kinds = {(0, 0): "self-attending", (0, 1): "previous-token", (1, 0): "induction", (1, 1): "other"}
    effects = torch.tensor([[7.0, 1.0], [3.0, 0.1]])
    assert comp.check_top2_prediction(("induction", "self-attending"), effects, kinds)
    assert comp.check_top2_prediction(["self-attending", "induction"], effects, kinds)   # any order
    with pytest.raises(CheckFailed, match="attention patterns"):
        comp.check_top2_prediction(("previous-token", "induction"), effects, kinds)
    with pytest.raises(CheckFailed, match="two kinds"):
        comp.check_top2_prediction(("induction", "queen"), effects, kinds)
    assert comp.check_top2_prediction(("previous-token", "self-attending"), torch.tensor([[7.0, 5.0], [3.0, 0.1]]), kinds)


# ------------------------------------------------------------------- the bundled model
def test_bundled_model_has_the_induction_circuit():
    from helpers import zoo

    if not (zoo.model_dir("rs-attn-2l") / "model.safetensors").exists():
        pytest.skip("rs-attn-2l is not trained yet")
    import helpers

    m = helpers.load_model("rs-attn-2l", device="cpu")
    toks = comp.repeated_random_tokens(m, n_seqs=8, length=30)
    pats = comp.attention_patterns(m, toks)
    pm, prev = comp.prefix_matching_scores(pats, 30), comp.previous_token_scores(pats)
    il, ih = divmod(int(pm.argmax()), m.cfg.n_heads)
    pl, ph = divmod(int(prev[:il].argmax()), m.cfg.n_heads)
    assert il == 1 and float(pm[il, ih]) > 0.4 and float(prev[pl, ph]) > 0.4
    base = comp.random_composition_baseline(m.cfg.d_model, m.cfg.d_head, n_samples=200)
    assert float(comp.composition_scores(m, "K", pl, il)[ph, ih]) > float(base.max())
    log = comp.training_log("rs-attn-2l")
    assert log[-1]["best_prefix_matching"] > 0.4


def test_path_ablation_routes_add_up_to_the_whole_ablation():
    import helpers

    m = helpers.load_model("rs-attn-2l", device="cpu")
    toks = comp.repeated_random_tokens(m, n_seqs=4, length=20, seed=3)
    out = comp.path_ablation_losses(m, toks, 20, 0, 0)
    # two layers, no MLP: Q, K, V of layer 1 and the direct path are every route from a layer-0 head
    assert out["every path"] == pytest.approx(out["all"], abs=1e-4)
    # and the routes are different interventions (a broken implementation that ignored the path would tie them)
    assert len({round(out[p][1], 3) for p in comp.PATHS}) == len(comp.PATHS)
    with pytest.raises(ValueError, match="reader"):
        comp.path_ablation_losses(m, toks, 20, 1, 0)
    with pytest.raises(ValueError, match="head"):
        comp.path_ablation_losses(m, toks, 20, 0, 99)


def test_path_ablation_with_a_resample_replacement():
    import helpers

    m = helpers.load_model("rs-attn-2l", device="cpu")
    toks = comp.repeated_random_tokens(m, n_seqs=4, length=20, seed=3)
    _, cache = m.run_with_cache(toks, names_filter="blocks.0.attn.hook_z")
    other = cache["blocks.0.attn.hook_z"][:, :, 0].roll(1, 0)      # each sequence gets another sequence's output
    out = comp.path_ablation_losses(m, toks, 20, 0, 0, replacement=other)
    assert out["every path"] == pytest.approx(out["all"], abs=1e-4)
    # the replacement is used: with the head's own clean output put back, nothing changes
    same = comp.path_ablation_losses(m, toks, 20, 0, 0, replacement=cache["blocks.0.attn.hook_z"][:, :, 0])
    for p in comp.PATHS + ("all",):
        assert same[p] == pytest.approx(same["clean"], abs=1e-4)
    assert out["all"][1] > out["clean"][1] + 1.0
    with pytest.raises(ValueError, match="replacement"):
        comp.path_ablation_losses(m, toks, 20, 0, 0, replacement=other[:, :5])
    # per sequence: the same means, with each sequence's second-copy loss
    per = comp.path_ablation_losses(m, toks, 20, 0, 0, replacement=other, per_sequence=True)
    for p in comp.PATHS + ("all",):
        assert per[p][:2] == pytest.approx(out[p], abs=1e-6) and per[p][2].shape == (4,)
        assert float(per[p][2].mean()) == pytest.approx(out[p][1], abs=1e-5)


def test_resampled_path_losses_pool_batches():
    import helpers

    m = helpers.load_model("rs-attn-2l", device="cpu")
    sets = [comp.repeated_random_tokens(m, n_seqs=4, length=20, seed=s) for s in (3, 4)]
    pooled = comp.resampled_path_losses(m, sets, 20, 0, 0)
    one = []
    for toks in sets:   # by hand: each batch resampled within itself, then averaged
        _, cache = m.run_with_cache(toks, names_filter="blocks.0.attn.hook_z")
        one.append(comp.path_ablation_losses(m, toks, 20, 0, 0, replacement=cache["blocks.0.attn.hook_z"][:, :, 0].roll(1, 0)))
    for p in comp.PATHS + ("all", "clean"):
        assert pooled[p][1] == pytest.approx((one[0][p][1] + one[1][p][1]) / 2, abs=1e-5)
        assert pooled[p][2].tolist() == pytest.approx([one[0][p][1], one[1][p][1]], abs=1e-5)
    with pytest.raises(ValueError, match="two sequences"):
        comp.resampled_path_losses(m, [sets[0][:1]], 20, 0, 0)
    with pytest.raises(ValueError, match="list of token batches"):
        comp.resampled_path_losses(m, sets[0], 20, 0, 0)
