"""The Residual Stream's model zoo: small transformers trained on a corpus we generate.

Two models ship inside this package (``helpers/zoo/models/<name>/``) as
safetensors checkpoints, with a model card and a training log each, and share
one byte-level BPE tokenizer.  ``load_bundled(name)`` returns a raw
``TransformerBridge`` in about a tenth of a second and never touches the
network.  The training distribution is known exactly: see
:mod:`helpers.zoo.world` (the facts and templates), :mod:`helpers.zoo.corpus`
(the generator) and :mod:`helpers.zoo.evals` (the quality checks).  Rebuild a
model from scratch with ``python -m helpers.zoo.train <name>``.  Importing this
package is cheap: torch and transformer_lens are imported only when loading.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED_MODELS", "model_dir", "load_bundled", "load_tokenizer", "TOKENIZER_DIR"]

BUNDLED_MODELS: dict[str, str] = {
    "rs-gpt2-4l": "4-layer GPT-2-style transformer (attention + MLP) that knows the world's facts, IOI and copying",
    "rs-attn-2l": "2-layer attention-only transformer with induction heads (training log shows the phase change)",
}

_ROOT = Path(__file__).resolve().parent / "models"
TOKENIZER_DIR = _ROOT / "tokenizer"


def model_dir(name: str) -> Path:
    """Folder that holds the checkpoint, tokenizer, card and training log of ``name``."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(BUNDLED_MODELS))}")
    return _ROOT / name


def load_tokenizer():
    """The shared Hugging Face fast tokenizer (``<|endoftext|>`` is BOS, EOS, UNK and PAD)."""
    from .tokenizer import load_tokenizer_from

    return load_tokenizer_from(TOKENIZER_DIR)


def load_bundled(name: str, device="cpu"):
    """Load a bundled model as a raw ``TransformerBridge`` on ``device`` (in eval mode)."""
    folder = model_dir(name)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} has no model.safetensors; run `python -m helpers.zoo.train {name}`")
    from .modeling import load_folder

    return load_folder(folder, device=device)
