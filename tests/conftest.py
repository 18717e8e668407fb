"""Shared test set-up: no model hub, deterministic hashing, repository paths."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))  # authoring tools (nbtools, nbbuild) are not part of the package

import pytest


def make_tokenizer(path: Path, vocab_size: int = 400):
    """A small byte-level BPE tokenizer trained on a few sentences (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["The Eiffel Tower is located in Paris.", "The capital of France is Paris.",
            "When Mary and John went to the store, John gave a drink to Mary."] * 20
    tok.train_from_iterator(text, trainer)
    hf = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           unk_token="<|endoftext|>")
    hf.save_pretrained(path)
    return hf


def make_gpt2_checkpoint(path: Path, **config) -> Path:
    """A randomly initialised GPT-2 checkpoint on disk, loadable by helpers.load_model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_tokenizer(path)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=config.pop("vocab_size", len(tok)), bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, **config)
    GPT2LMHeadModel(cfg).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    return make_gpt2_checkpoint(tmp_path_factory.mktemp("tiny_gpt2"), n_layer=2, n_embd=32, n_head=4, n_positions=64)


@pytest.fixture(scope="session")
def tiny_model(tiny_gpt2_dir):
    import helpers

    return helpers.load_model(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """Some fixtures switch autograd off for speed; every test starts with it on."""
    import torch

    torch.set_grad_enabled(True)
    yield
    torch.set_grad_enabled(True)


#: Tests that take minutes: marked ``slow`` here so a contributor can run the rest in under two
#: minutes with ``-m "not slow and not book and not browser"`` (README, "Tests").
SLOW_TESTS = {
    "test_wheel.py": None,                        # builds the wheel; installs it into a fresh environment
    "test_zoo_train.py": None,                    # trains both tiny recipes
    "test_exercises.py": {"test_every_registered_exercise_accepts_its_solution_and_names_each_mistake",
                          "test_every_registered_function_exercise_rejects_a_constant"},
    # measured over 30 s each (2 busy CPU cores): they train or sweep a model
    "test_sae.py": {"test_l1_prediction_exercise", "test_train_recovers_known_dictionary_and_keeps_unit_decoder"},
    "test_superposition.py": {"test_six_feature_exercise_measures_a_hexagon", "test_train_toy_models_geometry"},
    "test_ffn.py": {"test_neuron_patch_and_ablation_effects_match_one_run_per_neuron",
                    "test_most_damaging_neuron_checker_takes_the_chapter_model", "test_optimised_shift_changes_the_answer"},
    "test_patching.py": {"test_patch_heads_matches_naive", "test_sweep_matches_naive_per_position"},
    "test_norms.py": {"test_train_lm_learns_and_is_reproducible"},
    "test_organisms.py": {"test_checker_relation_recall"},
    "test_models.py": {"test_gpt2_small_shaped_checkpoint_through_the_reader_path"},
}


def pytest_collection_modifyitems(config, items):
    """Mark chapter notebooks (nbval items) and known-slow tests ``slow``; the book build ``book``;
    the headless-Chromium checks ``browser``."""
    for item in items:
        path = Path(str(item.fspath))
        name = item.name.split("[")[0]
        if path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
        if path.name in SLOW_TESTS and (SLOW_TESTS[path.name] is None or name in SLOW_TESTS[path.name]):
            item.add_marker(pytest.mark.slow)
        if path.name == "test_book.py":
            if "built_book" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.book)
                item.add_marker(pytest.mark.slow)
            if "chromium" in name:
                item.add_marker(pytest.mark.browser)
        if path.name == "test_pagecheck.py":
            item.add_marker(pytest.mark.browser)
