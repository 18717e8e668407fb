import pytest
import torch

import helpers
from helpers import stream
from helpers.exercises import CheckFailed

PROMPT = "The Eiffel Tower is located in"


@pytest.fixture(scope="module")
def run(tiny_model):
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(PROMPT)
    return tiny_model, cache


def test_decomposition_sums_to_final_stream_and_matches_transformerlens(run):
    model, cache = run
    L = model.cfg.n_layers
    parts, labels = stream.decompose_stream(model, cache)
    final = cache[f"blocks.{L - 1}.hook_resid_post"]
    assert (parts.sum(0) - final).abs().max() < 1e-5
    assert len(labels) == stream.count_additive_terms(L, model.cfg.n_heads, separate_biases=True)
    tl_heads, _ = cache.stack_head_results(return_labels=True)
    ours = torch.stack([p for p, lab in zip(parts, labels) if "H" in lab and "attn" not in lab])
    assert (ours - tl_heads).abs().max() < 1e-5
    # partial decomposition: the stream entering block 1 is embed + pos
    parts0, labels0 = stream.decompose_stream(model, cache, layer=0)
    assert labels0 == ["embed", "pos_embed"]
    assert (parts0.sum(0) - cache["blocks.0.hook_resid_pre"]).abs().max() < 1e-6


def test_decompose_stream_validates_layer(run):
    model, cache = run
    with pytest.raises(ValueError, match="layer must be an int in 0..2"):
        stream.decompose_stream(model, cache, layer=7)


def test_zero_block_hooks_make_a_block_the_identity(run):
    model, cache = run
    with torch.no_grad(), model.hooks(fwd_hooks=stream.zero_block_hooks([1], 2)):
        _, c = model.run_with_cache(PROMPT)
    assert torch.equal(c["blocks.1.hook_resid_post"], c["blocks.1.hook_resid_pre"])
    assert not torch.equal(c["blocks.0.hook_resid_post"], c["blocks.0.hook_resid_pre"])
    with pytest.raises(ValueError, match="Block indices"):
        stream.zero_block_hooks([5], 2)


def test_counts():
    assert stream.count_additive_terms(32, 32) == 1058
    assert stream.count_additive_terms(24, 16) == 410
    assert stream.count_additive_terms(24, 16, separate_biases=True) == 434
    assert stream.count_additive_terms(2, 8, attn_only=True) == 18
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        stream.count_additive_terms(2, 0)
    p = stream.writing_params(768, 12, 64, 3072)
    assert p["total"] == 5 * 768**2 and p["mlp_to_stream_ratio"] == 4


def test_explorer_builds_and_validates(run):
    model, cache = run
    sources, labels = stream.sublayer_sources(cache, model.cfg.n_layers)
    toks = model.to_str_tokens(PROMPT)
    fig, script = stream.decomposition_explorer(sources.numpy(), labels, toks)
    assert "plotly_click" in script and "{plot_id}" in script
    assert len(fig.data[0].y) == 2 * model.cfg.n_layers + 1
    with pytest.raises(ValueError, match="token labels"):
        stream.decomposition_explorer(sources.numpy(), labels, toks[:-1])
    widget = stream.decomposition_widget(sources.numpy(), labels, toks)
    assert widget.children


def test_checker_count_terms():
    assert stream.check_count_additive_terms(lambda L, H: 2 + L * (H + 1))
    with pytest.raises(CheckFailed, match="not the MLPs"):
        stream.check_count_additive_terms(lambda L, H: 2 + L * H)
    with pytest.raises(CheckFailed, match="embeddings"):
        stream.check_count_additive_terms(lambda L, H: L * (H + 1))
    with pytest.raises(CheckFailed, match="paths"):
        stream.check_count_additive_terms(lambda L, H: (H + 2) ** L)


def test_output_bias_shares_rebuild_the_folded_bias(tiny_gpt2_dir, tiny_model):
    """Compatibility mode's b_O is the trained b_O plus each head's carried value bias, all centred."""
    import helpers

    raw = helpers.load_model(str(tiny_gpt2_dir), device="cpu", compatibility=False)
    shares = stream.output_bias_shares(raw)
    L, H, d = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads, tiny_model.cfg.d_model
    assert shares["own"].shape == (L, d) and shares["heads"].shape == (L, H, d)
    rebuilt = shares["own"] + shares["heads"].sum(1)
    assert (rebuilt - tiny_model.b_O).abs().max() < 1e-5
    # dropping the heads' part (the claim "b_O belongs to no head") does not rebuild it, unless value biases are 0
    assert (shares["own"] - tiny_model.b_O).abs().max() > 1e-4 or shares["heads"].abs().max() < 1e-6
    with pytest.raises(TypeError, match="compatibility=False"):
        stream.output_bias_shares(object())


def test_silencing_costs_and_joint_cost(run):
    model, _ = run
    tokens = helpers.core.repeated_random_tokens(model, n_seqs=3, length=6, seed=2)
    costs = stream.silencing_costs(model, tokens)
    assert len(costs) == model.cfg.n_layers
    with torch.no_grad():
        base = model(tokens, return_type="loss").item()
        with model.hooks(fwd_hooks=stream.zero_block_hooks([0], 2)):
            alone = model(tokens, return_type="loss").item()
    assert costs[0] == pytest.approx(alone - base, abs=1e-5)
    gap = stream.solution_joint_cost(model, tokens, 0, 1)
    assert isinstance(gap, float)
    assert stream.check_joint_cost(stream.solution_joint_cost, model, [tokens], pairs=[(0, 1)])
    with pytest.raises(CheckFailed, match="effects add because writes add"):
        stream.check_joint_cost(lambda m, t, a, b: 0.0, model, [tokens], pairs=[(0, 1)])
    with pytest.raises(ValueError, match="block"):
        stream.silencing_costs(model, tokens, [9])


def test_least_needed_block_checker_accepts_blocks_within_noise_and_rejects_the_most_needed(run):
    model, _ = run
    texts = [helpers.core.repeated_random_tokens(model, n_seqs=4, length=6, seed=s) for s in (0, 1)]
    assert stream.check_least_needed_block(stream.solution_least_needed_block, model, texts)
    most = [int(stream.silencing_cost_windows(model, t).mean(-1).argmax()) for t in texts]
    if any(m not in stream.solution_least_needed_block(model, t).near for m, t in zip(most, texts)):
        with pytest.raises(CheckFailed, match="needs MOST"):
            stream.check_least_needed_block(lambda m, t: int(stream.silencing_cost_windows(m, t).mean(-1).argmax()),
                                            model, texts)
    with pytest.raises(CheckFailed, match="give a block index"):
        stream.check_least_needed_block(lambda m, t: 0.5, model, texts)


def test_near_least_accepts_a_block_within_two_standard_errors():
    """The review's case: block 3 costs 0.014 more than block 2 with a paired SE of 0.09; it must be accepted,
    not called 'one too high'."""
    wobble = torch.tensor([0.1, -0.1, 0.1, -0.1])
    costs = torch.stack([6 + wobble, 0.9 + wobble, 0.18 + wobble, 0.19 + torch.tensor([0.2, -0.2, -0.2, 0.2])])
    near = stream.near_least(costs)
    assert int(near) == 2 and near.near == {2, 3}
    on_text = costs.flip(0)
    assert stream.check_least_prediction(3, costs, on_text)
    with pytest.raises(CheckFailed, match="costs the MOST"):
        stream.check_least_prediction(0, costs, on_text)
    with pytest.raises(CheckFailed, match="within two standard errors of it are"):
        stream.check_least_prediction(1, costs, costs)   # held-out text agrees here: no mistake to name
    exact = torch.stack([6 + wobble, 0.9 + wobble, 0.18 + wobble, 0.5 + wobble])   # block 3 clearly costlier
    assert stream.near_least(exact).near == {2}
    with pytest.raises(ValueError, match="batch >= 2"):
        stream.near_least(costs[:, :1])


def test_prediction_exercises_wait_for_a_prediction(run, capsys):
    model, _ = run
    tokens = helpers.core.repeated_random_tokens(model, n_seqs=2, length=5, seed=0)
    called = []
    assert stream.check_joint_cost(lambda *a: called.append(a), model, [tokens], {"blocks 1+2": ..., "last two": "more"}) is False
    assert stream.check_least_needed_block(lambda *a: called.append(a), model, [tokens], ...) is False
    assert not called and capsys.readouterr().out.count("not attempted yet") == 2


def test_joint_prediction_directions_and_mistakes():
    wobble = torch.tensor([0.1, -0.1] * 4)
    measured = {"blocks 1+2": -1.0 + wobble, "last two": 1.0 + wobble}
    assert stream.gap_direction(wobble) == "same" and stream.gap_direction(-1.0 + wobble) == "less"
    assert stream.gap_direction(0.2 + wobble) == "more"            # 0.2 is more than 3 SE (0.11) from 0
    assert stream.gap_direction(0.05 + wobble) == "same"
    assert stream.check_joint_prediction({"blocks 1+2": "less", "last two": "more"}, measured)
    with pytest.raises(CheckFailed, match="effects add because the writes add"):
        stream.check_joint_prediction({"blocks 1+2": "same", "last two": "same"}, measured)
    with pytest.raises(CheckFailed, match="generalised from the one pair"):
        stream.check_joint_prediction({"blocks 1+2": "more", "last two": "more"}, measured)
    with pytest.raises(CheckFailed, match="answer one of"):
        stream.check_joint_prediction({"blocks 1+2": "lower", "last two": "more"}, measured)
    with pytest.raises(CheckFailed, match="give a dict with the keys"):
        stream.check_joint_prediction("less", measured)
    assert stream.check_joint_prediction({"blocks 1+2": ..., "last two": "more"}, measured) is False


def test_silencing_losses_are_cached_by_content_weights_and_hooks(run):
    """The cache must never change a result: same content in a new tensor hits it; tokens edited in place,
    weights edited in place, or hooks attached by the caller all give the freshly computed loss."""
    model, _ = run
    tokens = helpers.core.repeated_random_tokens(model, n_seqs=2, length=5, seed=3)

    def fresh(tok, blocks=()):
        with torch.no_grad(), model.hooks(fwd_hooks=stream.zero_block_hooks(list(blocks), 2) if blocks else []):
            return model(tok, return_type="loss", loss_per_token=True).mean(-1)

    first = stream.silenced_window_losses(model, tokens, [1])
    assert torch.allclose(first, fresh(tokens, [1]), atol=1e-6)
    assert torch.equal(stream.silenced_window_losses(model, tokens.clone(), [1]), first)     # content, not identity
    first.add_(100.0)                                                                       # a caller's edit stays theirs
    assert torch.allclose(stream.silenced_window_losses(model, tokens, [1]), fresh(tokens, [1]), atol=1e-6)
    edited = tokens.clone()
    edited[:, 1:] = edited[:, 1:].roll(1, dims=1)
    tokens[:] = edited                                                                      # the same tensor, new content
    assert torch.allclose(stream.silenced_window_losses(model, tokens, [1]), fresh(edited, [1]), atol=1e-6)
    w = next(model.parameters())
    before = stream.silenced_window_losses(model, tokens)
    with torch.no_grad():
        w.mul_(1.5)
    try:
        changed = stream.silenced_window_losses(model, tokens)
        assert torch.allclose(changed, fresh(tokens), atol=1e-6) and not torch.allclose(changed, before)
    finally:
        with torch.no_grad():
            w.div_(1.5)
    with model.hooks(fwd_hooks=stream.zero_block_hooks([0], 2)):                            # the caller's hooks count
        hooked = stream.silenced_window_losses(model, tokens)
    assert torch.allclose(hooked, stream.silenced_window_losses(model, tokens, [0]), atol=1e-6)
    assert torch.allclose(stream.silenced_window_losses(model, tokens), before, atol=1e-5)    # and were not kept
    with pytest.raises(ValueError, match="pos >= 2"):
        stream.silenced_window_losses(model, tokens[:, :1])


def test_rotary_terms_value_exercise():
    assert stream.check_rotary_terms(1089)
    with pytest.raises(CheckFailed, match="rotary model adds no positional vector"):
        stream.check_rotary_terms(1090)
    with pytest.raises(CheckFailed, match="mixture as one MLP write"):
        stream.check_rotary_terms(1057)
    assert stream.check_rotary_terms(...) is False


def test_interference_ratio_by_hand_and_its_checkers(run):
    """‖Σw‖²/Σ‖w‖² from the decomposition, recomputed by hand; the checkers refuse the named mistakes,
    a band outside the choices, and a model without texts."""
    model, text, rep = stream._default_run()
    _, cache = model.run_with_cache(text[:2])
    parts, _ = stream.decompose_stream(model, cache)
    by_hand = sum(float((parts[:, b, p].sum(0) @ parts[:, b, p].sum(0)) / (parts[:, b, p] ** 2).sum())
                  for b in range(2) for p in range(text.shape[1])) / (2 * text.shape[1])
    assert stream.solution_interference_ratio(model, text[:2]) == pytest.approx(by_hand, rel=1e-4)
    assert stream.interference_band(0.79) == "below 0.8" and stream.interference_band(1.0) == "0.8 to 1.25"
    assert stream.interference_band(1.26) == "above 1.25"
    with pytest.raises(CheckFailed, match="triangle inequality"):
        stream.check_interference_ratio(stream._norm_ratio)
    with pytest.raises(CheckFailed, match="choose one of"):
        stream.check_interference_prediction("about 1", 1.0)
    with pytest.raises(CheckFailed, match="push the stream further the same way"):
        stream.check_interference_prediction("above 1.25", 1.0)
    assert stream.check_interference_prediction("above 1.25", 1.4)
    with pytest.raises(ValueError, match="texts"):
        stream.check_interference_ratio(stream.solution_interference_ratio, model)
