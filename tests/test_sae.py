"""Tests for helpers.sae: the sparse autoencoder, its training, metrics and splicing."""
import pytest
import torch

import helpers.sae as S


def _sparse_data(n_true=16, d=8, n=6000, p=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_true, d, generator=g)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    codes = torch.rand(n, n_true, generator=g) * (torch.rand(n, n_true, generator=g) < p)
    codes = codes[(codes > 0).any(dim=1)]
    return codes @ dirs, dirs, codes


def test_encode_decode_shapes_and_validation():
    sae = S.SparseAutoencoder(6, 24, seed=0)
    x = torch.randn(5, 3, 6)
    recon, f = sae(x)
    assert recon.shape == x.shape and f.shape == (5, 3, 24) and (f >= 0).all()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-6)
    with pytest.raises(ValueError, match="d_in=6"):
        sae.encode(torch.randn(4, 5))
    with pytest.raises(ValueError):
        S.SparseAutoencoder(0, 4)


def test_train_recovers_known_dictionary_and_keeps_unit_decoder():
    x, dirs, codes = _sparse_data()
    sae, log = S.train_sae(x, n_features=32, l1_coeff=3.0, steps=1500, batch=256, seed=0)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)
    rec = S.max_cosine_recovery(sae, dirs)
    assert rec.shape == (16,) and float(rec.min()) > 0.95
    m = S.sae_metrics(sae, x)
    assert set(m) == {"mse", "fvu", "l0", "dead_fraction"}
    true_l0 = float((codes > 0).sum(dim=1).float().mean())
    assert m["l0"] < 3 * true_l0  # sparse code
    assert 0 <= m["fvu"] < 0.5 and 0 <= m["dead_fraction"] <= 1
    assert log.steps[-1] == 1500 and len(log.mse) == len(log.l0) == len(log.steps)


def test_training_is_deterministic():
    x, _, _ = _sparse_data(n=2000)
    a, _ = S.train_sae(x, 16, steps=50, seed=3)
    b, _ = S.train_sae(x, 16, steps=50, seed=3)
    assert torch.equal(a.W_dec, b.W_dec)


def test_resampling_revives_dead_features():
    x, _, _ = _sparse_data(n=3000)
    sae = S.SparseAutoencoder(8, 20, seed=0, input_scale=1.0)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    with torch.no_grad():
        sae.b_enc[:5] = -100.0  # these five can never fire
    dead = torch.zeros(20, dtype=torch.bool)
    dead[:5] = True
    assert (sae.encode(x)[:, :5] == 0).all()
    n = S._resample_dead(sae, opt, x, dead, torch.Generator().manual_seed(0))
    assert n == 5
    assert (sae.b_enc[:5] == 0).all()
    assert torch.allclose(sae.W_dec[:5].norm(dim=1), torch.ones(5), atol=1e-5)
    assert (sae.encode(x)[:, :5] > 0).any(dim=0).all()  # they fire again


def test_train_sae_logs_resampling_and_validates():
    x, _, _ = _sparse_data(n=2000)
    _, log = S.train_sae(x, 64, steps=200, resample_every=100, seed=0)
    assert [s for s, _ in log.resampled] == [100]
    with pytest.raises(ValueError, match="n_samples, d_in"):
        S.train_sae(x[0], 4)
    with pytest.raises(ValueError, match="l1_coeff"):
        S.train_sae(x, 4, l1_coeff=-1)


def _identity_sae(d):
    """An SAE that reconstructs exactly: features ±e_k, x̂ = ReLU(x) − ReLU(−x) = x."""
    sae = S.SparseAutoencoder(d, 2 * d, input_scale=1.0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_metrics_of_an_exact_sae():
    x = torch.randn(100, 4)
    m = S.sae_metrics(_identity_sae(4), x)
    assert m["mse"] < 1e-10 and m["fvu"] < 1e-10 and m["dead_fraction"] == 0.0
    assert 3 < m["l0"] <= 4  # one of ±e_k per coordinate
    with pytest.raises(TypeError):
        S.sae_metrics("not an sae", x)


def _bundled_model():
    import helpers

    try:
        return helpers.load_model("rs-gpt2-4l", device="cpu")
    except (FileNotFoundError, ValueError, helpers.ModelUnavailableError) as exc:
        pytest.skip(f"bundled model not available: {exc}")


def test_loss_recovered_on_the_bundled_model():
    model = _bundled_model()
    d = model.cfg.d_model
    tokens = model.to_tokens(["The Eiffel Tower is located in Paris.", "The capital of France is Paris."] * 2)[:, :8]
    res = S.loss_recovered(model, tokens, "blocks.1.hook_resid_post", _identity_sae(d))
    assert res["spliced"] == pytest.approx(res["clean"], abs=1e-4)
    assert res["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert res["zero_ablated"] > res["clean"]
    acts = S.collect_activations(model, tokens, "blocks.1.hook_resid_post")
    assert acts.shape == (tokens.shape[0] * (tokens.shape[1] - 1), d)
    with pytest.raises(ValueError, match="unknown hook"):
        S.collect_activations(model, tokens, "blocks.1.hook_nonsense")


def test_labelling_and_purity_helpers():
    lex = S.world_lexicon()
    assert lex["France"] == "country" and lex["Paris"] == "city" and lex["Eiffel Tower"] == "landmark"
    acts = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 3.0]])
    pur, units, tops = S.unit_purity(acts, ["country", "country", "city", "x"], k=2)
    assert units.tolist() == [0, 1] and tops[0] == "country" and pur.tolist() == [1.0, 0.5]
    tokens, labels = S.pack_sequences(list(range(10)), [str(i) for i in range(10)], seq_len=4, bos_id=99)
    assert tokens.tolist() == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]] and labels == [str(i) for i in range(9)]
    with pytest.raises(ValueError):
        S.pack_sequences([1, 2], ["a"], 4, 0)
    fig = S.feature_explorer_figure([{"name": "f1", "contexts": [("a [b] c", 2.0)], "promoted": [" x"]},
                                     {"name": "f2", "contexts": [("d [e]", 1.0)], "promoted": [" y"]}], "t")
    assert len(fig.layout.updatemenus[0].buttons) == 2 and fig.data[0].type == "bar"


def test_label_tokens_on_the_bundled_tokenizer():
    model = _bundled_model()
    ids, labels = S.label_tokens(model.tokenizer, ["The Eiffel Tower is located in Paris."], S.world_lexicon())
    assert len(ids) == len(labels)
    words = [model.tokenizer.decode([i]) for i in ids]
    assert labels[words.index(" Paris")] == "city"
    assert labels[words.index(" is")] == " is"
    assert "landmark" in labels


def test_loss_recovered_reports_mean_ablation_and_added_loss():
    model = _bundled_model()
    d = model.cfg.d_model
    tokens = model.to_tokens(["The Eiffel Tower is located in Paris.", "The capital of France is Paris."] * 2)[:, :8]
    acts = S.collect_activations(model, tokens, "blocks.0.hook_mlp_out")
    res = S.loss_recovered(model, tokens, "blocks.0.hook_mlp_out", _identity_sae(d), mean_activation=acts.mean(0))
    assert res["added_loss"] == pytest.approx(0.0, abs=1e-4)
    assert res["loss_recovered_mean"] == pytest.approx(1.0, abs=1e-3)
    assert res["mean_ablated"] != pytest.approx(res["zero_ablated"], abs=1e-3)  # a different reference
    with pytest.raises(ValueError, match="mean_activation"):
        S.loss_recovered(model, tokens, "blocks.0.hook_mlp_out", _identity_sae(d), mean_activation=torch.zeros(3))
    # replacement_loss with the identity is the clean loss; with zeros it is the zero-ablated loss
    assert S.replacement_loss(model, tokens, "blocks.0.hook_mlp_out", lambda x: x) == pytest.approx(res["clean"], abs=1e-4)
    assert S.replacement_loss(model, tokens, "blocks.0.hook_mlp_out", torch.zeros_like) == pytest.approx(
        res["zero_ablated"], abs=1e-4)
    with pytest.raises(ValueError, match="replace returned shape"):
        S.replacement_loss(model, tokens, "blocks.0.hook_mlp_out", lambda x: x[..., :3])
    per_seq = S.replacement_loss(model, tokens, "blocks.0.hook_mlp_out", torch.zeros_like, per_sequence=True)
    assert per_seq.shape == (tokens.shape[0],)
    assert float(per_seq.mean()) == pytest.approx(res["zero_ablated"], abs=1e-4)


def test_token_variance_explained():
    tok = torch.tensor([0, 1, 0, 1, 2, 2])
    table = torch.randn(3, 4)
    assert S.token_variance_explained(table[tok], tok) == pytest.approx(1.0)  # a pure lookup table
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(6000, 4, generator=g)
    ids = torch.randint(0, 3, (6000,), generator=g)
    assert S.token_variance_explained(noise, ids) < 0.01  # unrelated to the token
    with pytest.raises(ValueError, match="entries"):
        S.token_variance_explained(noise, ids[:10])


def test_promoted_share():
    W_U = torch.eye(4)
    target = torch.tensor([True, False, False, True])
    dirs = torch.tensor([[1.0, 0.0, 0.0, 0.9], [0.0, 1.0, 0.9, 0.0]])
    assert S.promoted_share(dirs, W_U, target, k=2).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="boolean mask"):
        S.promoted_share(dirs, W_U, target[:3], k=2)


def _l1_measurement(l0_low, fvu_low, l0_high, fvu_high):
    m = lambda l0, fvu: {"l0": l0, "fvu": fvu, "dead_fraction": 0.0, "mse": 0.0}
    return {"low": m(l0_low, fvu_low), "high": m(l0_high, fvu_high)}


def test_l1_prediction_is_checked_against_the_measurement_passed_in():
    from helpers.exercises import CheckFailed

    moderate = _l1_measurement(2.14, 0.34, 1.30, 0.69)      # the chapter's measurement at λ = 3 → 5
    collapsed = _l1_measurement(2.14, 0.34, 0.001, 1.01)    # what λ = 30 gave: the code switched off
    assert S.l1_effect(moderate) == ("lower", "higher", "1/2 to 1")
    assert S.l1_effect(collapsed) == ("lower", "higher", "below 1/10")
    assert S.l1_effect(_l1_measurement(3.0, 0.3, 3.05, 0.3)) == ("same", "same", "above 1")
    # the same prediction passes on one measurement and fails on the other: the checker grades what was measured
    assert S.check_l1_prediction(("Lower", "higher", "1/2 to 1"), moderate)
    with pytest.raises(CheckFailed, match="does not switch the code off"):
        S.check_l1_prediction(("lower", "higher", "below 1/10"), moderate)
    assert S.check_l1_prediction(("lower", "higher", "below 1/10"), collapsed)
    with pytest.raises(CheckFailed, match="not a reward"):
        S.check_l1_prediction(("higher", "higher", "1/2 to 1"), moderate)
    with pytest.raises(CheckFailed, match="FVU rises"):
        S.check_l1_prediction(("lower", "lower", "1/2 to 1"), moderate)
    with pytest.raises(CheckFailed, match="three strings"):
        S.check_l1_prediction("lower", moderate)
    with pytest.raises(CheckFailed, match="one of"):
        S.check_l1_prediction(("down", "higher", "1/2 to 1"), moderate)
    assert S.check_l1_prediction(..., moderate) is False
    with pytest.raises(ValueError, match="low"):
        S.l1_effect({"high": moderate["high"]})


@pytest.mark.slow
def test_l1_exercise_on_the_chapters_data_stays_out_of_collapse():
    """The chapter's λ = 5 keeps the SAE working (L0 > 0, FVU < 0.7), so the exercise is not about a dead code."""
    import helpers.superposition as sp

    toy = sp.train_toy_models(torch.full((1, 20), 0.04), torch.ones(20), 6, steps=1500, batch=256, restarts=2, seed=0)
    x = sp.sample_sparse_features(torch.full((1, 20), 0.04), 20000, torch.Generator().manual_seed(5))[0]
    h = x[(x > 0).any(dim=1)] @ toy.W[0].T
    measured = S.measure_l1_effect(h, 3.0, 5.0, n_features=40, steps=2000)
    assert measured["high"]["l0"] > 0.5 and measured["high"]["fvu"] < 0.7
    assert S.l1_effect(measured) == ("lower", "higher", "1/2 to 1")


def test_pca_fvu_and_near_duplicate_groups():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g) @ torch.randn(2, 5, generator=g)   # rank 2 in 5 dimensions
    assert S.pca_fvu(x, 2) == pytest.approx(0.0, abs=1e-10)
    assert S.pca_fvu(x, 0) == pytest.approx(1.0)
    assert 0 < S.pca_fvu(x, 1) < 1
    with pytest.raises(ValueError, match="between 0 and d"):
        S.pca_fvu(x, 6)
    e = torch.eye(4)
    assert S.near_duplicate_groups(e) == (4, 0)                        # orthogonal: no copies
    copies = torch.cat([e[:1], -e[:1], e[:1] + 0.01 * e[1:2], e[2:3]])  # three near-copies (sign ignored) and one apart
    assert S.near_duplicate_groups(copies) == (2, 3)
    chain = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.81, 0.59]])      # a~b and b~c but not a~c: one group
    assert S.near_duplicate_groups(chain, threshold=0.9) == (1, 3)
    with pytest.raises(ValueError, match="threshold"):
        S.near_duplicate_groups(e, threshold=1.5)


def test_reinitialize_gives_random_weights_and_keeps_hooks():
    import helpers

    try:
        model = helpers.load_model("rs-gpt2-4l", device="cpu")
        trained = helpers.load_model("rs-gpt2-4l", device="cpu")
    except (FileNotFoundError, ValueError, helpers.ModelUnavailableError) as exc:
        pytest.skip(f"bundled model not available: {exc}")
    S.reinitialize_(model, seed=0)
    assert abs(float(model.W_E.std()) - 0.02) < 0.002
    tokens = trained.to_tokens(["The capital of France is Paris."])
    a = S.collect_activations(trained, tokens, "blocks.0.hook_mlp_out")
    b = S.collect_activations(model, tokens, "blocks.0.hook_mlp_out")  # hooks still work
    assert a.shape == b.shape and not torch.allclose(a, b)
    # a random model's loss is near uniform guessing, the trained one's far below it
    import math
    assert abs(float(model(tokens, return_type="loss")) - math.log(model.cfg.d_vocab)) < 0.5
    assert float(trained(tokens, return_type="loss")) < math.log(trained.cfg.d_vocab) - 2
    with pytest.raises(ValueError, match="std"):
        S.reinitialize_(model, std=0)


def test_collect_activations_stops_after_the_hooks_block_without_changing_them():
    model = _bundled_model()
    tokens = model.to_tokens(["The Eiffel Tower is located in Paris.", "The capital of France is Paris."])[:, :8]
    for hook in ("blocks.0.hook_mlp_out", "blocks.0.mlp.hook_post", "blocks.2.hook_resid_post", "ln_final.hook_normalized"):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == hook)        # the whole forward pass
        full = cache[hook][:, 1:].reshape(-1, cache[hook].shape[-1])
        torch.testing.assert_close(S.collect_activations(model, tokens, hook), full, rtol=0, atol=0)
    calls = []
    handle = model.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        S.collect_activations(model, tokens, "blocks.0.hook_mlp_out")
        assert calls == []                         # block 1 never ran for a block-0 hook
        S.collect_activations(model, tokens, "blocks.1.hook_mlp_out")
        assert calls                               # ... and does run when the hook sits in it
    finally:
        handle.remove()
