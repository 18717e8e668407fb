"""helpers.lens: the direct path, path counts, block budgets, logit and tuned lens, direct logit attribution."""
import math

import pytest
import torch

import helpers
from helpers import lens
from helpers.exercises import CheckFailed

PROMPT = "The Eiffel Tower is located in Paris"


@pytest.fixture(scope="module")
def raw_model(tiny_gpt2_dir):
    return helpers.load_model(str(tiny_gpt2_dir), device="cpu", compatibility=False)


@pytest.fixture(scope="module")
def run(tiny_model):
    tokens = tiny_model.to_tokens(PROMPT)
    logits, cache = tiny_model.run_with_cache(tokens)
    return tokens, logits, cache


def _two_tokens(model):
    a, b = model.to_tokens(" Paris", prepend_bos=False)[0, :2].tolist()
    return a, b


def test_direct_path_from_weights_equals_model_with_every_block_silenced(tiny_model, raw_model, run):
    tokens = run[0]
    for model in (tiny_model, raw_model):
        floor = lens.direct_path_logits(model, tokens)
        silenced = lens.run_with_block_budget(model, tokens, 0)
        assert floor.shape == (1, tokens.shape[1], model.cfg.d_vocab)
        assert torch.allclose(floor, silenced, atol=1e-5)
    # both modes give the same next-token distribution; only raw mode has W_U = W_E^T
    p_compat = lens.direct_path_logits(tiny_model, tokens).log_softmax(-1)
    p_raw = lens.direct_path_logits(raw_model, tokens).log_softmax(-1)
    assert torch.allclose(p_compat, p_raw, atol=1e-4)
    assert torch.equal(raw_model.W_U, raw_model.W_E.T)


def test_block_budget_k_equals_logit_lens_at_block_k(tiny_model, run):
    tokens, logits, cache = run
    states, labels = lens.stream_states(cache, tiny_model.cfg.n_layers, sublayers=False)
    assert labels == ["h0 (embed)"] + [f"h{l + 1}" for l in range(tiny_model.cfg.n_layers)]
    for keep in range(tiny_model.cfg.n_layers + 1):
        budget = lens.run_with_block_budget(tiny_model, tokens, keep)
        assert torch.allclose(budget, lens.unembed(tiny_model, states[keep]), atol=1e-4)
    assert torch.allclose(lens.run_with_block_budget(tiny_model, tokens, tiny_model.cfg.n_layers), logits, atol=1e-5)
    # a real intervention: silencing the last block changes the output
    assert not torch.allclose(lens.run_with_block_budget(tiny_model, tokens, tiny_model.cfg.n_layers - 1), logits)


def test_block_budget_rejects_bad_k(tiny_model):
    with pytest.raises(ValueError, match="keep must be"):
        lens.block_budget_hooks(tiny_model, tiny_model.cfg.n_layers + 1)
    with pytest.raises(ValueError, match="keep must be"):
        lens.block_budget_hooks(tiny_model, -1)


def test_logit_lens_shapes_labels_and_last_depth_is_the_output(tiny_model, run):
    tokens, logits, cache = run
    ll, labels = lens.logit_lens(tiny_model, cache)
    L = tiny_model.cfg.n_layers
    assert ll.shape == (2 * L + 1, 1, tokens.shape[1], tiny_model.cfg.d_vocab)
    assert labels[0] == "h0 (embed)" and labels[1] == "after attn 1" and labels[-1] == f"after MLP {L}"
    assert torch.allclose(ll[-1], logits, atol=1e-5)
    assert torch.allclose(ll[0], lens.direct_path_logits(tiny_model, tokens), atol=1e-5)


def test_token_rank():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    assert lens.token_rank(logits, 1).tolist() == [0]
    assert lens.token_rank(logits, 3).tolist() == [1]
    assert lens.token_rank(logits, 2).tolist() == [3]
    with pytest.raises(ValueError):
        lens.token_rank(logits, 9)


def test_count_paths_by_convention():
    assert lens.count_paths(12, 12) == 26 ** 12 == lens.count_paths(12, 12, "sequential")
    assert math.isclose(lens.count_paths(12, 12), 9.54e16, rel_tol=1e-3)      # not "about 1e13"
    assert lens.count_paths(12, 12, "one-per-block") == 14 ** 12
    assert lens.count_paths(2, 4, "attention-only") == 25
    assert set(lens.PATH_CONVENTIONS) == {"sequential", "one-per-block", "attention-only"}
    with pytest.raises(ValueError, match="n_layers"):
        lens.count_paths(0, 12)
    with pytest.raises(ValueError, match="convention"):
        lens.count_paths(2, 2, "parallel")


def test_enumerated_paths_match_the_counts_and_are_bounded():
    for conv in lens.PATH_CONVENTIONS:
        paths = lens.enumerate_paths(3, 2, conv)
        assert len(paths) == len(set(paths)) == lens.count_paths(3, 2, conv)
    # sequential: a head followed by the MLP of the same block is a route of its own
    assert ("head 0 + MLP", "skip", "skip") in lens.enumerate_paths(3, 2, "sequential")
    assert ("head 0 + MLP", "skip", "skip") not in lens.enumerate_paths(3, 2, "one-per-block")
    with pytest.raises(ValueError, match="limit"):
        lens.enumerate_paths(12, 12)               # 9.5e16 paths: refused, not materialised


def test_kl_to_final_is_zero_for_the_same_logits_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    final = torch.randn(2, 5, 7, generator=g)
    stack = torch.stack([final, torch.randn(2, 5, 7, generator=g)])
    kl = lens.kl_to_final(stack, final)
    assert kl.shape == (2,) and abs(float(kl[0])) < 1e-6 and float(kl[1]) > 0
    with pytest.raises(ValueError):
        lens.kl_to_final(final, final)


def test_tuned_lens_starts_as_logit_lens_and_training_lowers_kl(tiny_model):
    torch.manual_seed(0)
    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (8, 24))
    tokens[:, 0] = tiny_model.tokenizer.bos_token_id
    logits, cache = tiny_model.run_with_cache(tokens)
    L = tiny_model.cfg.n_layers
    identity = lens.TunedLens(L, tiny_model.cfg.d_model)
    logit_kl = lens.kl_to_final(lens.logit_lens(tiny_model, cache, sublayers=False)[0], logits)
    assert torch.allclose(lens.kl_to_final(lens.tuned_lens_logits(tiny_model, identity, cache), logits), logit_kl)
    assert float(logit_kl[-1]) < 1e-6
    tuned, history = lens.train_tuned_lens(tiny_model, tokens[:6], steps=30, lr=1e-2, batch_tokens=128,
                                           heldout=tokens[6:], eval_every=10)
    assert history["train"][-1] < history["train"][0] and len(history["train"]) == 30
    assert history["eval_steps"] == [0, 10, 20, 30] and len(history["heldout"][0]) == L
    assert history["n_train_tokens"] == 6 * 23                              # BOS positions excluded
    # before training the held-out KL is the logit lens's on those windows
    ho_logits, ho_cache = tiny_model.run_with_cache(tokens[6:])
    ho_logit_kl = lens.kl_to_final(lens.logit_lens(tiny_model, ho_cache, sublayers=False)[0], ho_logits)
    assert torch.allclose(torch.tensor(history["heldout"][0]), ho_logit_kl[:-1], atol=1e-4)
    tuned_kl = lens.kl_to_final(lens.tuned_lens_logits(tiny_model, tuned, cache), logits)
    assert torch.all(tuned_kl[:-1] < logit_kl[:-1])
    assert all(p.grad is None for p in tiny_model.parameters())   # the model itself was not trained
    assert isinstance(tuned, lens.TunedLens) and isinstance(tuned, torch.nn.Module)  # a real class, not a factory
    with pytest.raises(ValueError, match="n_translators"):
        lens.TunedLens(0, tiny_model.cfg.d_model)


def test_direct_logit_attribution_sums_to_the_logit_difference(tiny_model, run):
    tokens, logits, cache = run
    a, b = 5, 9
    labels, contrib, actual = lens.direct_logit_attribution(tiny_model, cache, a, b)
    L, H = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    assert len(labels) == len(contrib) == 2 + L * (H + 2) + 1
    assert math.isclose(actual, float((logits[0, -1, a] - logits[0, -1, b]).detach()), abs_tol=1e-4)
    assert math.isclose(float(contrib.sum()), actual, abs_tol=1e-4)
    # heads agree with TransformerLens's own stack + apply_ln_to_stack
    stack = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)[:, 0]  # [L*H, d]
    tl = stack @ (tiny_model.W_U[:, a] - tiny_model.W_U[:, b])
    mine = torch.stack([contrib[labels.index(f"L{l + 1}H{h}")] for l in range(L) for h in range(H)])
    assert torch.allclose(mine, tl, atol=1e-5)


def test_direct_logit_attribution_validates(tiny_model, raw_model, run):
    _, _, cache = run
    with pytest.raises(ValueError, match="single token|one token"):
        lens.direct_logit_attribution(tiny_model, cache, " Paris is lovely", 3)
    with pytest.raises(ValueError, match="pos"):
        lens.direct_logit_attribution(tiny_model, cache, 1, 2, pos=99)
    _, raw_cache = raw_model.run_with_cache(run[0])
    with torch.no_grad():
        raw_model.ln_final.original_component.weight.mul_(2.0)  # a non-trivial final LN weight
    try:
        with pytest.raises(ValueError, match="compatibility mode"):
            lens.direct_logit_attribution(raw_model, raw_cache, 1, 2)
    finally:
        with torch.no_grad():
            raw_model.ln_final.original_component.weight.div_(2.0)


def test_figures_build(tiny_model, run):
    import plotly.graph_objects as go

    tokens, logits, cache = run
    fig, frames = lens.block_budget_figure(tiny_model, tokens, k=5)
    assert isinstance(fig, go.Figure) and len(frames) == tiny_model.cfg.n_layers + 1
    assert len(fig.layout.sliders[0].steps) == tiny_model.cfg.n_layers + 1
    assert all(abs(sum(p) - 1) <= 1 and len(p) == 5 for _, p in frames)
    f2 = lens.rank_probability_figure(["a", "b"], [3, 0], [0.1, 0.9], " Paris", "t")
    assert list(f2.data[0].y) == [4, 1]
    with pytest.raises(ValueError):
        lens.rank_probability_figure(["a"], [3, 0], [0.1, 0.9], " Paris", "t")
    f3 = lens.top_token_heatmap([["x", "y"]], [[0.5, 0.2]], ["d"], ["p0", "p1"], "t")
    assert f3.data[0].z.shape == (1, 2)
    f4 = lens.kl_figure(["a", "b"], {"logit lens": [1, 0], "tuned lens": [0.5, 0]}, "t")
    assert len(f4.data) == 2
    f5 = lens.dla_figure(["x", "y"], [1.0, -2.0], "t", 1)
    assert len(f5.layout.updatemenus[0].buttons) == 2


# ---------------------------------------------------------------- exercise checkers

def test_paths_by_convention_checker():
    sol = lens.solution_paths_by_convention
    for L in range(1, 4):                      # the formulas agree with listing the sequential paths
        for H in range(1, 4):
            paths = lens.enumerate_paths(L, H, "sequential")
            two = sum(sum((c != "skip") + ("+" in c) for c in p) == 2 for p in paths)
            assert sol(L, H)["exactly-two"] == two
            assert sol(L, H)["through-an-MLP"] == sum(any("MLP" in c for c in p) for p in paths)
            assert sol(L, H)["parallel"] == len(lens.enumerate_paths(L, H, "one-per-block"))
    assert lens.check_paths_by_convention(sol)
    assert lens.check_paths_by_convention(lambda L, H: (_ for _ in ()).throw(NotImplementedError())) is False
    with pytest.raises(CheckFailed, match="attention-only ones"):        # subtracted (H + 2)^L
        lens.check_paths_by_convention(lambda L, H: {**sol(L, H), "through-an-MLP": (2 * (H + 1)) ** L - (H + 2) ** L})
    with pytest.raises(CheckFailed, match="ONE block"):                  # forgot head-then-MLP in one block
        lens.check_paths_by_convention(lambda L, H: {**sol(L, H), "exactly-two": L * (L - 1) // 2 * (H + 1) ** 2})
    with pytest.raises(CheckFailed, match="attention-only count"):       # parallel = attention-only
        lens.check_paths_by_convention(lambda L, H: {**sol(L, H), "parallel": (H + 1) ** L})
    with pytest.raises(CheckFailed, match="keys"):
        lens.check_paths_by_convention(lambda L, H: {"sequential": (2 * (H + 1)) ** L})
    with pytest.raises(CheckFailed, match="dict"):
        lens.check_paths_by_convention(lambda L, H: 7)
    with pytest.raises(CheckFailed):                                     # a constant dict
        lens.check_paths_by_convention(lambda L, H: sol(4, 4))


def test_prediction_checkers_compare_with_the_measurement():
    assert lens.rank_band(0) == "top-1" and lens.rank_band(9) == "top-10" and lens.rank_band(500) == "below top-100"
    assert lens.check_silenced_rank_prediction("below top-100", 685)
    assert lens.check_silenced_rank_prediction(..., 685) is False          # not attempted yet
    with pytest.raises(CheckFailed, match="from scratch"):
        lens.check_silenced_rank_prediction("top-1", 685)
    with pytest.raises(CheckFailed, match="one of"):
        lens.check_silenced_rank_prediction("somewhere", 685)
    with pytest.raises(CheckFailed, match="on their own"):                # the other way round
        lens.check_silenced_rank_prediction("below top-100", 0)
    ranks = [1500, 800, 2, 1, 0, 0, 3, 0, 0]
    assert lens.first_top1_depth(ranks) == 7 and lens.first_top1_depth([0, 0, 1]) is None
    assert lens.check_lens_depth_prediction(7, ranks)
    assert lens.check_lens_depth_prediction(7, ranks, 4)
    with pytest.raises(CheckFailed, match="echoes"):
        lens.check_lens_depth_prediction(0, ranks)
    with pytest.raises(CheckFailed, match="before the last sub-layer"):
        lens.check_lens_depth_prediction(8, ranks)
    with pytest.raises(CheckFailed, match="predicted depth 4"):
        lens.check_lens_depth_prediction(4, ranks)
    with pytest.raises(CheckFailed, match="Eiffel prompt's depth, copied"):   # the other prompt's depth
        lens.check_lens_depth_prediction(4, ranks, 4)


def test_top1_agreement_and_random_init(tiny_model, run):
    _, _, cache = run
    agree = lens.top1_agreement(tiny_model, cache)
    assert agree.shape == (tiny_model.cfg.n_layers + 1,) and float(agree[-1]) == 1.0


def test_random_init_model_keeps_shape_and_ties_but_not_weights(tiny_gpt2_dir, raw_model):
    rand = lens.random_init_model(str(tiny_gpt2_dir), seed=0)
    assert rand.W_E.shape == raw_model.W_E.shape and not torch.allclose(rand.W_E, raw_model.W_E)
    assert torch.equal(rand.W_U, rand.W_E.T)                               # still tied, like GPT-2 at init
    assert abs(float(rand.W_E.detach().std()) - 0.02) < 0.002             # not bundled: GPT-2's 0.02
    assert lens.init_std(str(tiny_gpt2_dir)) == 0.02
    with pytest.raises(ValueError, match="std"):
        lens.random_init_model(str(tiny_gpt2_dir), std=0)


def test_logit_lens_checker(tiny_model, run):
    _, _, cache = run
    assert lens.check_logit_lens_at(lens.solution_logit_lens_at, tiny_model, cache)
    with pytest.raises(CheckFailed, match="ln_final"):
        lens.check_logit_lens_at(lambda m, c, l: c[f"blocks.{l}.hook_resid_post"][0] @ m.W_U + m.b_U, tiny_model, cache)
    with pytest.raises(CheckFailed):  # off by one block
        lens.check_logit_lens_at(lambda m, c, l: lens.solution_logit_lens_at(m, c, max(l - 1, 0)) + (l == 0), tiny_model, cache)


def test_neurons_for_half_checker(tiny_model, run):
    _, _, cache = run
    a, b = 5, 9
    assert lens.check_neurons_for_half(lens.solution_neurons_for_half, tiny_model, cache, a, b)
    votes = lens.neuron_votes(tiny_model, cache, 0, a, b)
    k = lens.solution_neurons_for_half(tiny_model, cache, 0, a, b)
    sign = 1 if float(votes.sum()) >= 0 else -1
    top = (sign * votes).sort(descending=True).values
    assert float(top[:k].sum()) >= abs(float(votes.sum())) / 2 > float(top[:k - 1].sum())   # fewest that reach half
    with pytest.raises(CheckFailed, match="how few"):                    # counts every neuron voting for
        lens.check_neurons_for_half(lambda m, c, l, x, y: int((lens.neuron_votes(m, c, l, x, y) > 0).sum()),
                                    tiny_model, cache, a, b)
    with pytest.raises(CheckFailed):                                      # off by one
        lens.check_neurons_for_half(lambda m, c, l, x, y: lens.solution_neurons_for_half(m, c, l, x, y) + 1,
                                    tiny_model, cache, a, b)


def test_kl_checker():
    assert lens.check_kl_divergence(lens.solution_kl_divergence)
    with pytest.raises(CheckFailed, match="KL\\(P_lens"):
        lens.check_kl_divergence(lambda p, q: lens.solution_kl_divergence(q, p))
    with pytest.raises(CheckFailed):  # forgot the softmax: compares logits directly
        lens.check_kl_divergence(lambda p, q: ((p - q) ** 2).sum(-1))


def test_block_budget_widget_builds_and_validates(tiny_model):
    import ipywidgets as widgets

    box = lens.block_budget_widget(tiny_model, "The Eiffel Tower", k=3)
    assert isinstance(box, widgets.VBox)
    text, slider, _ = box.children
    assert slider.max == tiny_model.cfg.n_layers and slider.value == tiny_model.cfg.n_layers
    slider.value = 0                               # redraws with every block silenced, without error
    with pytest.raises(ValueError, match="prompt"):
        lens.block_budget_widget(tiny_model, "")


def test_inputs_are_validated(tiny_model, run):
    tokens, _, cache = run
    with pytest.raises(TypeError, match="integer tensor"):
        lens.direct_path_logits(tiny_model, tokens.float())
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        lens.direct_path_logits(tiny_model, tokens[0])
    with pytest.raises(ValueError, match="n_layers"):
        lens.stream_states(cache, 0)
    with pytest.raises(ValueError, match="has no"):
        lens.stream_states(cache, tiny_model.cfg.n_layers + 3)
    with pytest.raises(ValueError, match="d_model"):
        lens.unembed(tiny_model, torch.zeros(3, tiny_model.cfg.d_model + 1))
    with pytest.raises(ValueError, match="seq_len"):
        lens.corpus_windows(tiny_model, 4, tiny_model.cfg.n_ctx + 1)
    with pytest.raises(ValueError, match="steps"):
        lens.train_tuned_lens(tiny_model, tokens, steps=0)


def test_paths_terms_figure():
    fig = lens.paths_terms_figure([5, 12], max_layers=12)
    assert fig.data[0].y[-1] == float(12 ** 12) and fig.data[1].y[-1] == float(7 ** 12)
    assert fig.data[2].y[-1] == float(6 ** 12) and fig.data[3].y[-1] == 2 + 12 * 6
    assert len(fig.layout.title.text) <= 60
    h12 = fig.layout.updatemenus[0].buttons[1].args[0]["y"]
    assert h12[0][-1] == float(26 ** 12) and h12[3][-1] == 2 + 12 * 13
    with pytest.raises(ValueError):
        lens.paths_terms_figure([], 3)


def _bundled_ready() -> bool:
    from helpers import zoo

    return (zoo.model_dir("rs-gpt2-4l") / "model.safetensors").exists()


@pytest.mark.skipif(not _bundled_ready(), reason="the bundled rs-gpt2-4l has not been trained yet")
def test_chapter_claims_hold_on_the_bundled_model():
    model = helpers.load_model("rs-gpt2-4l", device="cpu")
    tokens = model.to_tokens("The Eiffel Tower is located in")
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    paris = model.to_single_token(" Paris")
    assert int(logits[0, -1].argmax()) == paris
    direct = lens.direct_path_logits(model, tokens)
    assert float((direct.argmax(-1) == tokens).float().mean()) > 0.5        # the tied direct path echoes its input
    ll, _ = lens.logit_lens(model, cache)
    ranks = lens.token_rank(ll[:, 0, -1], paris)
    assert int(ranks[0]) > 0 and int(ranks[-1]) == 0
    labels, contrib, actual = lens.direct_logit_attribution(model, cache, " Paris", " London")
    assert abs(float(contrib.sum()) - actual) < 1e-4


def test_tuned_lens_logits_and_dla_validate(tiny_model, run):
    _, _, cache = run
    with pytest.raises(ValueError, match="TunedLens"):
        lens.tuned_lens_logits(tiny_model, lens.TunedLens(tiny_model.cfg.n_layers + 1, tiny_model.cfg.d_model), cache)
    with pytest.raises(ValueError, match="batch"):
        lens.direct_logit_attribution(tiny_model, cache, 1, 2, batch=3)


@pytest.mark.skipif(not _bundled_ready(), reason="the bundled rs-gpt2-4l has not been trained yet")
def test_random_init_uses_the_organisms_own_scale():
    import json

    from helpers import zoo

    card = json.loads((zoo.model_dir("rs-gpt2-4l") / "card.json").read_text())
    assert lens.init_std("rs-gpt2-4l") == card["config"]["init_std"] == 0.05
    rand = lens.random_init_model("rs-gpt2-4l", seed=0)
    assert abs(float(rand.W_E.detach().std()) - 0.05) < 0.005             # not GPT-2's 0.02
    assert abs(float(lens.random_init_model("rs-gpt2-4l", std=0.02).W_E.detach().std()) - 0.02) < 0.002


@pytest.fixture(scope="module")
def organism_facts():
    if not _bundled_ready():
        pytest.skip("the bundled rs-gpt2-4l has not been trained yet")
    model = helpers.load_model("rs-gpt2-4l", device="cpu")
    facts = lens.fact_set(model, max_prompts=40)
    fcache = lens.last_token_cache(model, facts["tokens"], facts["last"], lens.fact_cache_names(model.cfg.n_layers))
    return model, facts, fcache


def test_fact_set_padding_and_last_token_cache(organism_facts):
    model, facts, fcache = organism_facts
    assert len(facts["prompts"]) == 40 and facts["tokens"].shape[0] == 40
    assert (facts["answer"] != facts["rival"]).all()
    with torch.no_grad():
        for i in (0, 17, 39):                                   # right padding changes nothing before it
            alone = model(model.to_tokens(facts["prompts"][i]))[0, -1]
            assert torch.allclose(alone, fcache["logits"][i], atol=1e-4)
            assert model.to_tokens(facts["prompts"][i]).shape[1] == int(facts["last"][i]) + 1
    assert fcache["blocks.0.hook_resid_post"].shape == (40, 1, model.cfg.d_model)
    with pytest.raises(ValueError, match="last"):
        lens.last_token_cache(model, facts["tokens"], facts["last"][:-1], ["hook_embed"])
    with pytest.raises(ValueError, match="has no"):
        lens.last_token_cache(model, facts["tokens"][:2], facts["last"][:2], ["no.such.hook"])


def test_fact_dla_sums_and_answer_ranks(organism_facts):
    model, facts, fcache = organism_facts
    labels, votes, diff = lens.fact_dla(model, facts, fcache)
    assert votes.shape == (40, len(labels)) and labels[-1] == "unembed bias"
    assert torch.allclose(votes.sum(1), diff, atol=1e-4)
    # row 3 equals the one-prompt attribution on its own cache
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(facts["prompts"][3]))
    one = lens.direct_logit_attribution(model, cache, int(facts["answer"][3]), int(facts["rival"][3]))[1]
    assert torch.allclose(one, votes[3], atol=1e-4)
    broken = dict(fcache, **{"ln_final.hook_scale": fcache["ln_final.hook_scale"] * 2})   # a wrong scale breaks the sum
    assert not torch.allclose(lens.fact_dla(model, facts, broken)[1].sum(1), diff, atol=1e-4)
    states = lens.stream_states(fcache, model.cfg.n_layers)[0][:, :, 0]
    ranks = lens.answer_ranks(model, states, facts["answer"])
    assert ranks.shape == (2 * model.cfg.n_layers + 1, 40)
    assert ranks[-1].tolist() == [int(lens.token_rank(fcache["logits"][i], int(facts["answer"][i]))) for i in range(40)]
    with pytest.raises(ValueError, match="one answer per row"):
        lens.answer_ranks(model, states, facts["answer"][:3])


def test_kl_by_depth_and_constant_baseline(tiny_model):
    torch.manual_seed(0)
    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (3, 10))
    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(tokens)
        full = lens.kl_to_final(lens.logit_lens(tiny_model, cache, sublayers=False)[0], logits)
    per_window = lens.kl_by_depth(tiny_model, cache)
    assert per_window.shape == (tiny_model.cfg.n_layers + 1, 3)
    assert torch.allclose(per_window.mean(1), full, atol=1e-5) and float(per_window[-1].abs().max()) < 1e-6
    const = lens.mean_distribution_kl(tiny_model, cache)
    logp = logits[:, 1:].log_softmax(-1)
    p_bar = logp.exp().mean((0, 1))
    assert torch.allclose(const, (logp.exp() * (logp - p_bar.log())).sum(-1).mean(-1), atol=1e-5)
    # p_bar is the best constant: any other constant guess scores worse
    other = (logp.exp() * (logp - logp[0, 0])).sum(-1).mean()
    assert float(const.mean()) < float(other)


# ---------------------------------------------------------------- bounded memory on a large vocabulary (issue 18)

def test_top1_agreement_in_chunks_equals_one_piece(tiny_model, monkeypatch):
    torch.manual_seed(1)
    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (5, 12))
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens)
    lens_logits, _ = lens.logit_lens(tiny_model, cache, sublayers=False)
    top = lens_logits[:, :, 1:].argmax(-1)
    one_piece = (top == top[-1:]).float().mean((1, 2))
    assert torch.equal(lens.top1_agreement(tiny_model, cache), one_piece)
    monkeypatch.setattr(lens, "_chunk_rows", lambda *a, **k: 2)              # 3 chunks of 2, 2 and 1 sequences
    chunked = lens.top1_agreement(tiny_model, cache)
    assert torch.equal(chunked, one_piece)
    # the comparison can fail: agreement over the first two sequences only is a different number
    assert not torch.equal(lens.top1_agreement(tiny_model, {k: v[:2] for k, v in cache.items()}), one_piece)


def test_tuned_lens_heldout_kl_does_not_depend_on_the_chunk(tiny_model, monkeypatch):
    torch.manual_seed(2)
    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (6, 16))
    tokens[:, 0] = tiny_model.tokenizer.bos_token_id
    kw = dict(steps=2, lr=1e-2, batch_tokens=16, seed=0, heldout=tokens[4:], eval_every=1)
    _, whole = lens.train_tuned_lens(tiny_model, tokens[:4], **kw)
    monkeypatch.setattr(lens, "_chunk_rows", lambda *a, **k: 7)               # 30 held-out positions in chunks of 7
    _, chunked = lens.train_tuned_lens(tiny_model, tokens[:4], **kw)
    assert torch.allclose(torch.tensor(chunked["heldout"]), torch.tensor(whole["heldout"]), atol=1e-5)
    assert len(whole["heldout"]) == 3 and not torch.allclose(torch.tensor(whole["heldout"][0]),
                                                             torch.tensor(whole["heldout"][-1]))


def test_block_budget_figure_reads_the_given_budget_logits(tiny_model, run):
    tokens, _, _ = run
    n = tiny_model.cfg.n_layers
    with torch.no_grad():
        budget = torch.stack([lens.run_with_block_budget(tiny_model, tokens, k) for k in range(n + 1)])
    _, fresh = lens.block_budget_figure(tiny_model, tokens, k=4)
    _, reused = lens.block_budget_figure(tiny_model, tokens, k=4, budget_logits=budget)
    assert reused == fresh
    _, flipped = lens.block_budget_figure(tiny_model, tokens, k=4, budget_logits=budget.flip(0))
    assert flipped == fresh[::-1] and flipped != fresh                         # the frames come from the logits given
    with pytest.raises(ValueError, match="budget_logits"):
        lens.block_budget_figure(tiny_model, tokens, k=4, budget_logits=budget[:-1])
