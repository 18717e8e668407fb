"""helpers.core: the ground floor every topic module and the zoo share."""
import pytest
import torch

import helpers
from helpers import composition as comp
from helpers import core, lens, stream
from helpers.zoo import evals


@pytest.fixture(scope="module")
def attn():
    return helpers.load_model("rs-attn-2l")


def test_one_definition_for_each_shared_name():
    assert stream.stream_states is lens.stream_states is core.stream_states
    assert stream.decompose_stream is core.decompose_stream
    for name in ("repeated_random_tokens", "attention_patterns", "per_token_loss", "copy_losses",
                 "previous_token_scores", "prefix_matching_scores", "duplicate_token_scores"):
        assert getattr(comp, name) is getattr(core, name), name
    from helpers import ffn

    assert ffn.corpus_tokens is evals.corpus_tokens and lens.corpus_windows is evals.corpus_windows


def test_chapters_0_and_5_report_the_same_induction_figures(attn):
    """Chapter 0 reads evals.induction_losses / prefix_matching_by_head; chapter 5 builds the same
    numbers from comp.repeated_random_tokens (n=16, length=50, seed=0) step by step."""
    length = 50
    toks = comp.repeated_random_tokens(attn, n_seqs=16, length=length, seed=0)
    with torch.no_grad():
        first, second = comp.copy_losses(comp.per_token_loss(attn(toks), toks), length)
    pm = comp.prefix_matching_scores(comp.attention_patterns(attn, toks), length)
    ch0 = evals.induction_losses(attn)
    assert (ch0["first_copy"], ch0["second_copy"]) == (first, second)
    assert torch.equal(evals.prefix_matching_by_head(attn), pm)
    assert second < 1.0 < first  # the bundled model has its induction head


def test_copy_losses_and_second_copy_loss(attn):
    nll = torch.arange(10.0).reshape(1, 10)  # BOS + R + R with |R| = 5: 11 tokens, 10 losses
    assert core.copy_losses(nll) == (2.5, 7.5)  # mean of 1..4 and of 6..9
    with pytest.raises(ValueError, match="1 \\+ 2\\*length"):
        core.copy_losses(nll, 4)
    toks = core.repeated_random_tokens(attn, 2, 10, seed=1)
    with torch.no_grad():
        want = core.copy_losses(core.per_token_loss(attn(toks), toks))[1]
    assert core.second_copy_loss(attn, toks) == pytest.approx(want)
    zero_all = [(f"blocks.{l}.attn.hook_z", core.zero_head_hook(h)) for l in range(2) for h in range(attn.cfg.n_heads)]
    assert core.second_copy_loss(attn, toks, fwd_hooks=zero_all) > want + 1.0  # no heads, no induction


def test_mean_head_hook_replaces_one_head():
    z = torch.randn(2, 3, 4, 5)
    out = core.mean_head_hook(1, torch.ones(5))(z.clone())
    assert torch.equal(out[:, :, 1], torch.ones(2, 3, 5)) and torch.equal(out[:, :, 0], z[:, :, 0])


def test_repeated_token_batch_matches_the_training_draw():
    got = core.repeated_token_batch(torch.arange(1, 100), 0, 3, 6, seed=4)
    g = torch.Generator().manual_seed(4)
    rand = torch.randint(1, 100, (3, 6), generator=g)  # how the recipe drew before the batch moved here
    assert torch.equal(got, torch.cat([torch.zeros(3, 1, dtype=torch.long), rand, rand], 1))
    with pytest.raises(ValueError, match="allowed_ids"):
        core.repeated_token_batch(torch.tensor([]), 0, 3, 6)


def test_validators_name_what_to_fix():
    assert core.require_int("n", 3) == 3
    with pytest.raises(ValueError, match="n must be a positive int, got True"):
        core.require_int("n", True)
    with pytest.raises(ValueError, match=r"layer must be an int in 0..3 \(why\), got 4"):
        core.require_int("layer", 4, 0, 3, "why")
    with pytest.raises(ValueError, match="head must be an int in 0..1"):
        core.require_index("head", 2, 2)
    with pytest.raises(TypeError, match="TransformerBridge"):
        core.require_model(object())
    with pytest.raises(ValueError, match="has no 'x'"):
        core.require_cache_key({}, "x")


def test_write_labels_and_decomposition_sum_to_the_stream(attn):
    toks = core.repeated_random_tokens(attn, 1, 5)
    with torch.no_grad():
        _, cache = attn.run_with_cache(toks)
    parts, labels = core.decompose_stream(attn, cache)
    assert labels == core.write_labels(2, attn.cfg.n_heads, pos_embed="hook_pos_embed" in cache, mlp=False)
    assert torch.allclose(parts.sum(0), cache["blocks.1.hook_resid_post"], atol=1e-4)
    with pytest.raises(ValueError, match="layer must be an int in 0..2"):
        core.decompose_stream(attn, cache, 3)


def _shape(n_layers, d_model, d_mlp, d_vocab, device="cpu"):
    from types import SimpleNamespace

    cfg = SimpleNamespace(n_layers=n_layers, d_model=d_model, d_mlp=d_mlp, d_vocab=d_vocab, device=device)
    return SimpleNamespace(cfg=cfg)


def test_scaled_keeps_organism_sizes_and_shrinks_gpt2_on_cpu():
    organism = _shape(4, 128, 512, 2048)
    gpt2 = _shape(12, 768, 3072, 50257)
    assert core.forward_cost(organism) == core._REFERENCE_COST
    assert 110 < core.forward_cost(gpt2) / core.forward_cost(organism) < 125
    assert core.scaled(160, organism) == 160
    assert core.scaled(160, gpt2, minimum=8) == 8  # 160 · 4/117 ≈ 5.5, held at the minimum
    assert core.scaled(1000, gpt2) == round(1000 * 4 * core._REFERENCE_COST / core.forward_cost(gpt2))
    assert core.scaled(160, _shape(12, 768, 3072, 50257, device="cuda")) == 160


def test_scaled_refuses_bad_arguments():
    organism = _shape(4, 128, 512, 2048)
    with pytest.raises(ValueError, match="minimum"):
        core.scaled(8, organism, minimum=9)
    with pytest.raises(ValueError, match="n must be"):
        core.scaled(0, organism)
    with pytest.raises(ValueError, match="allowance"):
        core.scaled(8, organism, allowance=0)
    with pytest.raises(TypeError, match="TransformerBridge"):
        core.scaled(8, object())
