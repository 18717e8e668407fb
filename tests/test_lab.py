"""The lab (lab.md): the ONNX export against the TransformerBridge, the page's JavaScript against
Python, and the page itself in headless Chromium, offline."""
import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest

import labcheck
from conftest import ROOT

LAB = ROOT / "lab"
TOL_EXPORT = 1e-4


def _load_export():
    spec = importlib.util.spec_from_file_location("lab_export", LAB / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export = _load_export()


# ----------------------------------------------------------------------------- ONNX against the bridge
@pytest.fixture(scope="module")
def bridges():
    from helpers.models import load_model

    return {name: load_model(name, device="cpu") for name in export.MODELS}


@pytest.fixture(scope="module")
def graphs(bridges):
    return {name: export.build_graph(export.bridge_weights(m, name), int(m.cfg.n_ctx), name)
            for name, m in bridges.items()}


@pytest.fixture(scope="module")
def means(bridges):
    return {name: export.mean_activations(m) for name, m in bridges.items()}


def _session(onnx_model):
    import onnxruntime as ort

    return ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])


def _prompt_set(model, meta):
    """The fixed prompts: the canonical ones, one token, a long corpus sentence, a repeated random sequence."""
    prompts = [model.to_tokens(p)[0].tolist() for p, _, _ in export.CANONICAL]
    prompts.append(model.to_tokens("x")[0].tolist())
    prompts.append(model.to_tokens(" ".join(["The capital of France is Paris."] * 14))[0].tolist()[:128])
    prompts.append(export.lab_repeat_ids({**meta, "special_ids": [0], "bos": 0, "d_vocab": 2048}, 20, 3))
    return prompts


def parity_errors(session, model, meta, ids, ablate=None) -> dict:
    """Largest |ONNX - bridge| of every output, relative to the output's own scale (max |bridge value|, at least 1)."""
    import torch

    L, H, dh, d = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model
    ablate = ablate or {}
    keep, fill = np.ones((L, H), np.float32), np.zeros((L, H, dh), np.float32)
    mk, mf = np.ones(L, np.float32), np.zeros((L, d), np.float32)
    for l, h in ablate.get("heads", []):
        keep[l, h] = 0
        fill[l, h] = meta["head_mean"][l][h] if ablate.get("mode") == "mean" else 0
    for l in ablate.get("mlps", []):
        mk[l] = 0
        mf[l] = meta["mlp_mean"][l] if ablate.get("mode") == "mean" else 0
    feeds = {"tokens": np.asarray(ids, np.int64), "head_keep": keep, "head_fill": fill}
    if not model.cfg.attn_only:
        feeds.update(mlp_keep=mk, mlp_fill=mf)
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with torch.no_grad(), model.hooks(fwd_hooks=export.ablation_hooks(model, meta, ablate)):
        logits, cache = model.run_with_cache(torch.tensor([ids]))
    from helpers import lens

    with torch.no_grad():
        lens_logits, _ = lens.logit_lens(model, cache, sublayers=False)
        ref = {
            "logits": logits[0],
            "resid": torch.stack([cache["blocks.0.hook_resid_pre"][0]] +
                                 [cache[f"blocks.{l}.hook_resid_post"][0] for l in range(L)]),
            "lens_logits": lens_logits[:, 0],
            "pattern": torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(L)]),
            "z": torch.stack([cache[f"blocks.{l}.attn.hook_z"][0] for l in range(L)]),
            "final_scale": cache["ln_final.hook_scale"][0, :, 0],
        }
        if not model.cfg.attn_only:
            ref["mlp_out"] = torch.stack([cache[f"blocks.{l}.hook_mlp_out"][0] for l in range(L)])
    errors = {}
    for key, value in ref.items():
        value = value.float().cpu().numpy()
        assert outs[key].shape == value.shape, f"{key}: ONNX {outs[key].shape}, bridge {value.shape}"
        errors[key] = float(np.abs(outs[key] - value).max() / max(1.0, np.abs(value).max()))
    # DLA: every pair of columns of writer_logits against helpers.lens.direct_logit_attribution
    a, b = int(np.argmax(outs["logits"][-1])), int(np.argsort(outs["logits"][-1])[-2])
    py = export.python_values(model, meta, ids, a, b, ablate)
    w = outs["writer_logits"]
    errors["dla"] = float(np.abs((w[:, a] - w[:, b]) - np.asarray(py["dla"])).max() / max(1.0, np.abs(py["dla"]).max()))
    return errors


@pytest.mark.slow
@pytest.mark.parametrize("name", export.MODELS)
def test_onnx_export_reproduces_the_bridge(name, bridges, graphs, means):
    model, session = bridges[name], _session(graphs[name])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ablations = [None, {"heads": [[0, 1], [L - 1, H - 1]], "mode": "zero"},
                 {"heads": [[L - 1, 0]], "mlps": [] if model.cfg.attn_only else [0, L - 1], "mode": "mean"}]
    worst = {}
    for ids in _prompt_set(model, means[name]):
        for ablate in ablations:
            for key, err in parity_errors(session, model, means[name], ids, ablate).items():
                worst[key] = max(worst.get(key, 0.0), err)
    assert set(worst) >= {"logits", "resid", "lens_logits", "pattern", "z", "final_scale", "dla"}
    bad = {k: v for k, v in worst.items() if not v <= TOL_EXPORT}
    assert not bad, f"{name}: ONNX differs from the TransformerBridge by more than {TOL_EXPORT}: {bad}"


@pytest.mark.slow
def test_shipped_files_are_the_exported_graph(bridges, means, tmp_path):
    """model.onnx + weights.bin.gz, as the site ships them, unpack to a model that matches the bridge."""
    name = "rs-gpt2-4l"
    export.export(tmp_path / "out", names=(name,))
    folder = tmp_path / "out" / "site" / "lab" / "models" / name
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json",
                                                         "tokenizer_config.json", "weights.bin.gz"]
    assert (folder / "model.onnx").stat().st_size < 100_000, "the weights belong in weights.bin.gz"
    session = export.load_shipped(folder, tmp_path / "unpacked")
    model = bridges[name]
    errors = parity_errors(session, model, means[name], model.to_tokens(export.CANONICAL[0][0])[0].tolist())
    assert max(errors.values()) <= TOL_EXPORT, errors
    first = (folder / "weights.bin.gz").read_bytes()
    export.export(tmp_path / "again", names=(name,))
    assert (tmp_path / "again" / "site" / "lab" / "models" / name / "weights.bin.gz").read_bytes() == first


@pytest.mark.slow
def test_parity_check_catches_a_wrong_weight(bridges, means):
    """The comparison above must fail on a graph with one weight off by 0.1 %."""
    name = "rs-attn-2l"
    model = bridges[name]
    w = export.bridge_weights(model, name)
    w["W_O"] = w["W_O"].copy()
    w["W_O"][1, 2] *= 1.001
    broken = _session(export.build_graph(w, int(model.cfg.n_ctx), name))
    errors = parity_errors(broken, model, means[name], model.to_tokens(export.CANONICAL[0][0])[0].tolist())
    assert errors["logits"] > TOL_EXPORT or errors["resid"] > TOL_EXPORT, errors


def test_export_is_deterministic(bridges):
    name = "rs-attn-2l"
    w = export.bridge_weights(bridges[name], name)
    one = export.build_graph(w, 128, name).SerializeToString()
    two = export.build_graph(export.bridge_weights(bridges[name], name), 128, name).SerializeToString()
    assert one == two


def test_ablation_hooks_validate_the_mode(bridges):
    with pytest.raises(ValueError, match="zero' or 'mean"):
        export.ablation_hooks(bridges["rs-attn-2l"], {}, {"heads": [[0, 0]], "mode": "resample"})


# ----------------------------------------------------------------------------- JavaScript maths, in Node
NODE = shutil.which("node")


def _node(script: str):
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, cwd=LAB,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(NODE is None, reason="needs Node.js")
def test_js_random_sequence_matches_python():
    meta = {"special_ids": [0], "d_vocab": 2048, "bos": 0}
    js = _node("import {repeatIds} from './src/analysis.js';"
               f"console.log(JSON.stringify([1, 2, 99].map(s => repeatIds({json.dumps(meta)}, 20, s))));")
    assert js == [export.lab_repeat_ids(meta, 20, s) for s in (1, 2, 99)]
    assert js[0] != js[1], "different seeds must draw different sequences"


@pytest.mark.skipif(NODE is None, reason="needs Node.js")
def test_js_lens_and_scores_match_numpy():
    """analysis.js on random arrays against numpy versions of the book's definitions."""
    rng = np.random.default_rng(0)
    D, T, V, L, H = 3, 5, 11, 2, 3
    lens = (rng.normal(size=(D, T, V)) * 3).astype(np.float32)
    lens[1, 2, 4] = lens[1, 2, 7]  # a tie: rank counts strictly larger logits
    pattern = rng.random((L, H, T, T)).astype(np.float32)
    ids = [0, 5, 6, 5, 6]
    js = _node("import * as A from './src/analysis.js';"
               f"const lens = Float32Array.from({json.dumps(lens.ravel().tolist())});"
               f"const pat = Float32Array.from({json.dumps(pattern.ravel().tolist())});"
               f"const r = A.logitLens(lens, {D}, {T}, {V}, 4);"
               f"console.log(JSON.stringify({{lens: r, prev: A.previousTokenScores(pat, {L}, {H}, {T}),"
               f" ind: A.inductionScores(pat, {L}, {H}, {json.dumps(ids)}, null),"
               f" pm: A.inductionScores(pat, {L}, {H}, [0, 5, 6, 5, 6], 2)}}));")
    p = np.exp(lens - lens.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert js["lens"]["topIds"] == p.argmax(-1).tolist()
    assert js["lens"]["targetRank"] == (lens > lens[..., 4:5]).sum(-1).tolist()
    assert js["lens"]["targetRank"][1][2] == (lens[1, 2] > lens[1, 2, 4]).sum()
    np.testing.assert_allclose(js["lens"]["targetProb"], p[..., 4], atol=1e-6)
    t = np.arange(1, T)
    np.testing.assert_allclose(js["prev"], pattern[..., t, t - 1].mean(-1), atol=1e-6)
    # induction on BOS + R + R: the second copy (positions 3, 4) attends to the token after the first occurrence
    np.testing.assert_allclose(js["pm"], pattern[..., [3, 4], [2, 3]].mean(-1), atol=1e-6)
    np.testing.assert_allclose(js["ind"], js["pm"], atol=1e-6)


# ----------------------------------------------------------------------------- the page in Chromium
@pytest.fixture(scope="module")
def lab_site(tmp_path_factory):
    return labcheck.build_lab_book(tmp_path_factory.mktemp("lab_book"))


@pytest.fixture(scope="module")
def lab(lab_site):
    with labcheck.Lab(lab_site) as session:
        first = session.open()
        session.first = first
        session.first_requests = session.requests()
        session.first_errors = session.console_errors()
        yield session


def _refs(lab_site):
    ref = labcheck.reference_dir(lab_site)
    return {name: json.loads((ref / f"{name}.json").read_text()) for name in export.MODELS}


@pytest.mark.browser
@pytest.mark.slow
def test_lab_loads_offline_with_only_the_chosen_model(lab, lab_site):
    assert lab.first.get("error") is None, lab.first
    assert not lab.first_errors, lab.first_errors
    urls = [r["url"] for r in lab.first_requests]
    outside = [u for u in urls if not u.startswith((lab.base, "data:", "blob:", "about:"))]
    assert not outside, f"requests left the machine: {outside}"
    assert not [r["url"] for r in lab.first_requests if r["failed"]]
    assert any("models/rs-gpt2-4l/model.onnx" in u for u in urls)
    assert not any("rs-attn-2l" in u for u in urls), "a model the reader has not chosen was loaded"
    assert not any("plotly" in u for u in urls), "the lab page does not need plotly.js"
    size = labcheck.page_bytes(lab_site, lab.first_requests, lab.base)
    assert size["raw"] <= 24e6 and size["gzip"] <= 8e6, size


@pytest.mark.browser
@pytest.mark.slow
def test_other_pages_do_not_load_the_lab(lab, lab_site):
    lab.open("intro.html")
    urls = [r["url"] for r in lab.requests()]
    assert urls and not [u for u in urls if "/lab/" in u or u.endswith(".wasm") or u.endswith(".onnx")], urls
    html = (lab_site / "intro.html").read_text(encoding="utf-8")
    assert "lab/lab.js" not in html and "lab/lab.js" in (lab_site / "lab.html").read_text(encoding="utf-8")


@pytest.mark.browser
@pytest.mark.slow
def test_js_tokenizer_matches_python(lab, lab_site):
    cases = json.loads((labcheck.reference_dir(lab_site) / "tokenizer.json").read_text())["cases"]
    assert len(cases) >= 212
    texts = [c["text"] for c in cases]
    assert "" in texts and any(not t.isascii() for t in texts) and any(len(t) > 1000 for t in texts)
    for model in export.MODELS:
        got = lab.call("encode", texts, model)
        wrong = [(c["text"][:60], c["ids"][:12], g[:12]) for c, g in zip(cases, got) if c["ids"] != g]
        assert not wrong, f"{model}: {len(wrong)} of {len(cases)} texts tokenised differently, e.g. {wrong[:3]}"


@pytest.mark.browser
@pytest.mark.slow
def test_page_matches_python_on_the_canonical_prompts_and_ablations(lab, lab_site):
    refs = _refs(lab_site)
    checked = 0
    for name, ref in refs.items():
        for case in ref["cases"]:
            if case["prompt"] is None:
                continue
            out = lab.call("set", {"model": name, "prompt": case["prompt"], "target": case["target_text"],
                                   "rival": case["rival_text"], "ablate": case["ablate"] or {"heads": [], "mlps": []}})
            assert out["error"] is None, (name, case["prompt"], out["error"])
            bad = labcheck.compare(out["result"], case)
            assert not bad, f"{name}, {case['prompt']!r}, ablation {case['ablate']}:\n" + "\n".join(bad[:10])
            # what the reader sees is what was compared: the bars and cells carry the same numbers
            dom = lab.driver.execute_script(
                "return {dla: [...document.querySelectorAll('#lab-dla [data-value]')].map(e => +e.dataset.value),"
                " ranks: [...document.querySelectorAll('#lab-lens td[data-rank]')].map(e => +e.dataset.rank),"
                " top: +document.querySelector('#lab-top [data-id]').dataset.id};")
            assert dom["dla"] == out["result"]["dla"]
            assert dom["ranks"] == [r for row in out["result"]["lens_target_rank"] for r in row]
            assert dom["top"] == case["top_ids"][0]
            checked += 1
    assert checked >= 2 * (len(export.CANONICAL) + 2)
    lab.call("set", {"model": "rs-gpt2-4l", "ablate": {"heads": [], "mlps": []}})
    urls = [r["url"] for r in lab.requests()]
    assert any("rs-attn-2l/weights.bin.gz" in u for u in urls), "choosing the other model loads it"
    assert not [u for u in urls if not u.startswith((lab.base, "data:", "blob:", "about:"))]


@pytest.mark.browser
@pytest.mark.slow
def test_ablating_a_head_with_its_checkbox_updates_every_panel(lab):
    before = lab.call("set", {"model": "rs-gpt2-4l", "prompt": "The Eiffel Tower is located in", "target": " Paris",
                              "rival": " London", "ablate": {"heads": [], "mlps": []}})["result"]
    i = before["dla_labels"].index("L4H0")
    assert abs(before["dla"][i]) > 1e-3
    lab.click_and_wait("lab-ab-h3-0")
    after = lab.driver.execute_script("return [...document.querySelectorAll('#lab-dla [data-value]')].map(e => +e.dataset.value)")
    assert after[i] == 0.0, "a zero-ablated head writes nothing"
    assert after != before["dla"]
    lab.driver.find_element("id", "lab-ab-h3-0").click()


@pytest.mark.browser
@pytest.mark.slow
def test_repeated_random_sequence_shows_induction(lab, lab_site):
    ref = next(c for c in _refs(lab_site)["rs-gpt2-4l"]["cases"] if c["prompt"] is None)
    lab.call("set", {"model": "rs-gpt2-4l", "prompt": "x", "ablate": {"heads": [], "mlps": []}})
    lab.driver.execute_script("window.rsLab.state.seed = 0;")
    lab.click_and_wait("lab-repeat")
    out = lab.call("set", {})["result"]
    assert out["ids"] == ref["ids"], "the button draws the sequence Python drew for seed 1"
    bad = labcheck.compare(out, ref)
    assert not bad, "\n".join(bad[:10])
    first, second = out["copy_losses"]
    assert second < 0.2 * first, f"no induction on the second copy: {first:.2f} vs {second:.2f} nats"
    shown = lab.driver.find_element("id", "lab-copy").text
    assert f"{first:.2f}" in shown and f"{second:.2f}" in shown


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("settings, message", [
    ({"prompt": ""}, "The prompt is empty"),
    ({"prompt": "   "}, "The prompt is empty"),
    ({"prompt": " ".join(["The capital of France is Paris."] * 30)}, "reads at most 128"),
    ({"target": " Pariss"}, "is not one token"),
    ({"target": "Pariss"}, 'try " Pariss"'),
    ({"rival": ""}, "Type a rival token"),
    ({"rival": " Paris"}, "the same token"),
])
def test_errors_are_shown_in_the_page(lab, settings, message):
    base = {"model": "rs-gpt2-4l", "prompt": "The Eiffel Tower is located in", "target": " Paris", "rival": " London",
            "ablate": {"heads": [], "mlps": []}}
    out = lab.call("set", {**base, **settings})
    shown = lab.driver.find_element("id", "lab-error")
    assert out["error"] and message in out["error"], out["error"]
    assert shown.is_displayed() and message in shown.text
    ok = lab.call("set", base)
    assert ok["error"] is None and not lab.driver.find_element("id", "lab-error").is_displayed()


@pytest.mark.browser
@pytest.mark.slow
def test_screenshots_of_the_lab(lab):
    lab.call("set", {"model": "rs-gpt2-4l", "prompt": "The Eiffel Tower is located in", "target": " Paris",
                     "rival": " London", "ablate": {"heads": [], "mlps": []}})
    shots = ROOT / "_build" / "screenshots"
    paths = [lab.screenshot(shots / f"lab-{w}x{h}-{mode}{'-full' if full else ''}.png", w, h,
                            dark=mode == "dark", full=full)
             for w, h in ((1280, 900), (390, 844)) for mode in ("light", "dark") for full in (False, True)]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert not lab.console_errors()


def test_compare_reports_a_wrong_value():
    """labcheck.compare must fail on a page that is off by more than the tolerance, or has another rank."""
    case = {"ids": [0, 1], "top_ids": [3], "top_probs": [0.5], "lens_top_ids": [[1, 2]], "lens_top_probs": [[0.4, 0.5]],
            "lens_target_rank": [[0, 3]], "lens_target_prob": [[0.4, 0.1]], "dla_labels": ["embed"], "dla": [1.0],
            "logit_diff": 1.0, "prev_token_scores": [[0.5]], "token_loss": [2.0]}
    assert labcheck.compare(dict(case), case) == []
    assert labcheck.compare(dict(case, dla=[1.002]), case)
    assert labcheck.compare(dict(case, lens_target_rank=[[0, 4]]), case)
    assert labcheck.compare(dict(case, top_ids=[4]), case)
