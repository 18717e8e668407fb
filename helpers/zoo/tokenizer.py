"""The byte-level BPE tokenizer shared by every zoo model.

It is trained with the ``tokenizers`` library on the generated corpus in the
GPT-2 style: ByteLevel pre-tokenizer without an added prefix space, ByteLevel
decoder, and one special token ``<|endoftext|>`` that serves as BOS, EOS, UNK
and PAD.  Every entity word in the world (answers, countries, names) must be a
single token with a leading space (" Paris", " Potter"); the training text is
topped up with those words so that BPE learns them, and ``check_single_tokens``
fails loudly if any is still split.  Training is deterministic for a fixed
corpus, so both models' commands can rebuild the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from . import world as W
from .corpus import EOT

VOCAB_SIZE = 2048
ENTITY_BOOST = 300  # times each entity word is added to the tokenizer's training text


def train_tokenizer(docs: list[str], vocab_size: int = VOCAB_SIZE):
    """Train the BPE on ``docs`` and return a ``transformers.GPT2TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    if vocab_size < 512:
        raise ValueError(f"vocab_size must be at least 512, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    boost = [" ".join([f" {w}"] * ENTITY_BOOST) for w in W.answer_words()]
    tok.train_from_iterator(list(docs) + boost, trainer=trainer)
    hf = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT,
                           unk_token=EOT, pad_token=EOT, add_prefix_space=False)
    hf.model_max_length = 1024
    check_single_tokens(hf)
    return hf


def check_single_tokens(tokenizer, words: list[str] | None = None) -> None:
    """Raise ValueError unless every word encodes to ONE token with a leading space."""
    words = W.answer_words() if words is None else words
    bad = [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) != 1]
    if bad:
        raise ValueError(f"{len(bad)} entity words are not single tokens: {bad[:20]}")


def save_tokenizer(tokenizer, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_tokenizer_from(path: str | Path):
    """Load a tokenizer folder written by ``save_tokenizer``."""
    from transformers import GPT2TokenizerFast

    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    return GPT2TokenizerFast.from_pretrained(str(path))
