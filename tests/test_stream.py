import pytest
import torch

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
    tokens = model.to_tokens([PROMPT, "The capital of France is Paris."])
    costs = stream.silencing_costs(model, tokens)
    assert len(costs) == model.cfg.n_layers
    with torch.no_grad():
        base = model(tokens, return_type="loss").item()
        with model.hooks(fwd_hooks=stream.zero_block_hooks([0], 2)):
            alone = model(tokens, return_type="loss").item()
    assert costs[0] == pytest.approx(alone - base, abs=1e-6)
    gap = stream.solution_joint_cost(model, tokens, 0, 1)
    assert isinstance(gap, float)
    assert stream.check_joint_cost(stream.solution_joint_cost, model, [tokens], pairs=[(0, 1)])
    with pytest.raises(CheckFailed, match="effects add because writes add"):
        stream.check_joint_cost(lambda m, t, a, b: 0.0, model, [tokens], pairs=[(0, 1)])
    with pytest.raises(ValueError, match="block"):
        stream.silencing_costs(model, tokens, [9])


def test_least_needed_block_checker_rejects_the_most_needed(run):
    model, _ = run
    texts = [model.to_tokens(PROMPT), model.to_tokens("When Mary and John went to the store, John gave")]
    assert stream.check_least_needed_block(stream.solution_least_needed_block, model, texts)
    most = [max(range(2), key=stream.silencing_costs(model, t).__getitem__) for t in texts]
    least = [stream.solution_least_needed_block(model, t) for t in texts]
    if most != least:
        with pytest.raises(CheckFailed, match="needs MOST"):
            stream.check_least_needed_block(lambda m, t: max(range(2), key=stream.silencing_costs(m, t).__getitem__),
                                            model, texts)


def test_rotary_terms_value_exercise():
    assert stream.check_rotary_terms(1089)
    with pytest.raises(CheckFailed, match="rotary model adds no positional vector"):
        stream.check_rotary_terms(1090)
    with pytest.raises(CheckFailed, match="mixture as one MLP write"):
        stream.check_rotary_terms(1057)
    assert stream.check_rotary_terms(...) is False
