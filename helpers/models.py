"""One door to every model the book studies.

``load_model(name)`` returns a TransformerLens ``TransformerBridge`` for a
bundled model organism (trained by this project, shipped with the package),
for a Hugging Face hub name such as ``"gpt2"`` when the hub can be reached
(Colab), or for a local folder holding a Hugging Face checkpoint. Every
chapter loads its model through this function, so switching a chapter from the
bundled organism to GPT-2 is a one-word change.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from .env import get_device, hub_reachable

__all__ = ["load_model", "available_models", "HUB_MODELS", "ModelUnavailableError"]

#: Hub checkpoints the chapters are written to run on (GPT-2 family).
HUB_MODELS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "openai-community/gpt2": "openai-community/gpt2",
    "openai-community/gpt2-medium": "openai-community/gpt2-medium",
}


class ModelUnavailableError(RuntimeError):
    """A model exists but cannot be loaded here (for example: no network)."""


def available_models() -> dict[str, str]:
    """Name → description of the models ``load_model`` knows by name."""
    from . import zoo

    names = dict(zoo.BUNDLED_MODELS)
    for alias, repo in HUB_MODELS.items():
        if alias == repo:
            continue
        names[alias] = f"{repo} from the Hugging Face hub (needs network)"
    return names


def load_model(name: str, device=None, compatibility: bool = True):
    """Load a model as a ``TransformerBridge`` in evaluation mode.

    Args:
        name: a bundled model ("rs-gpt2-4l", "rs-attn-2l"), a hub name ("gpt2"),
            or the path of a local folder with a Hugging Face checkpoint.
        device: where to put it; defaults to :func:`helpers.get_device`.
        compatibility: if True (the book's default) call
            ``enable_compatibility_mode()``, which folds LayerNorm weights into the
            next linear map and centres the unembedding, so hooks and numbers match
            the conventions of the old ``HookedTransformer``. Pass False for the raw
            Hugging Face weights (used where a chapter needs the tied W_E = W_Uᵀ).
    """
    from . import zoo

    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"load_model expects a model name (str), got {type(name).__name__}.")
    device = get_device() if device is None else get_device(str(device))
    name_str = str(name)

    if name_str in zoo.BUNDLED_MODELS:
        with _quiet_loading():
            bridge = zoo.load_bundled(name_str, device=device)
    elif name_str in HUB_MODELS:
        bridge = _load_from_hub(HUB_MODELS[name_str], device)
    elif Path(name_str).is_dir():
        with _quiet_loading():
            bridge = _boot_transformers(name_str, device)
    else:
        valid = "\n".join(f"  {k!r}: {v}" for k, v in available_models().items())
        raise ValueError(
            f"Unknown model {name_str!r}. Valid names are:\n{valid}\n"
            "or the path of a folder holding a Hugging Face checkpoint."
        )
    if compatibility:
        bridge.enable_compatibility_mode()
    bridge.eval()
    _inputs_follow_model(bridge)
    _inputs_within_limits(bridge, name_str)
    return bridge


@contextlib.contextmanager
def _quiet_loading():
    """No progress bars while weights load: in a notebook, transformers' "Loading weights"
    bar is a widget that would be stored in every executed chapter's outputs. The previous
    setting is restored afterwards, so a reader's own downloads keep their bars."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _inputs_within_limits(bridge, name: str) -> None:
    """Reject, with a message naming the limit, the two inputs that otherwise fail deep inside
    torch with a bare ``IndexError``: a prompt longer than the context (``cfg.n_ctx``) and a
    token id outside the vocabulary (``0 … cfg.d_vocab - 1``).

    Wraps ``bridge.to_tokens`` (which TransformerLens would otherwise cut silently to the
    context) and ``bridge.forward``, through which ``bridge(...)``, ``run_with_cache`` and
    ``run_with_hooks`` all pass. ``to_tokens(..., truncate=True)`` still cuts on request.
    """
    import functools

    import torch

    n_ctx, d_vocab = int(bridge.cfg.n_ctx), int(bridge.cfg.d_vocab)
    original_to_tokens, original_forward = bridge.to_tokens, bridge.forward

    def too_long(n: int) -> ValueError:
        return ValueError(
            f"This prompt is {n} tokens long, but {name} reads at most n_ctx = {n_ctx} tokens "
            f"(its context length). Shorten the prompt, split it into pieces of at most {n_ctx} "
            f"tokens, or cut it explicitly with model.to_tokens(text, truncate=True)."
        )

    @functools.wraps(original_to_tokens)
    def to_tokens(input, *args, truncate=None, **kwargs):
        if truncate is not None:  # the caller chose: cut (True) or keep everything (False)
            return original_to_tokens(input, *args, truncate=truncate, **kwargs)
        tokens = original_to_tokens(input, *args, truncate=False, **kwargs)
        if tokens.shape[-1] > n_ctx:
            raise too_long(tokens.shape[-1])
        return tokens

    @functools.wraps(original_forward)
    def forward(input, *args, **kwargs):
        if (isinstance(input, torch.Tensor) and not input.is_floating_point() and not input.is_complex()
                and kwargs.get("start_at_layer") is None and kwargs.get("past_key_values") is None):
            if input.ndim == 0:
                raise ValueError("Token ids must be a 1-D [pos] or 2-D [batch, pos] tensor, got a scalar.")
            if input.shape[-1] > n_ctx:
                raise too_long(input.shape[-1])
            if input.numel():
                lo, hi = int(input.min()), int(input.max())
                if lo < 0 or hi >= d_vocab:
                    bad = lo if lo < 0 else hi
                    raise ValueError(
                        f"Token id {bad} is outside the vocabulary of {name}: valid ids are 0 … "
                        f"{d_vocab - 1} (d_vocab = {d_vocab}). Were these tokens made by another "
                        f"model's tokenizer?"
                    )
        return original_forward(input, *args, **kwargs)

    bridge.to_tokens = to_tokens
    bridge.forward = forward


def _inputs_follow_model(bridge) -> None:
    """Let ``bridge(tokens)``, ``run_with_cache`` and ``run_with_hooks`` take token tensors
    on any device, as the old ``HookedTransformer`` did: a chapter can build tokens on
    the CPU and still run a model that lives on a GPU. All three entry points go
    through ``bridge.forward``, so one wrapper on the instance covers them."""
    import functools

    import torch

    original = bridge.forward

    @functools.wraps(original)
    def forward(*args, **kwargs):
        device = next(bridge.parameters()).device
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) and a.device != device else a for a in args)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) and v.device != device else v
                  for k, v in kwargs.items()}
        return original(*args, **kwargs)

    bridge.forward = forward


def _boot_transformers(path_or_repo: str, device):
    from transformer_lens.model_bridge import TransformerBridge

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return TransformerBridge.boot_transformers(path_or_repo, device=str(device))


def _in_local_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False
    hit = try_to_load_from_cache(repo, "config.json")
    return isinstance(hit, str)


def _load_from_hub(repo: str, device):
    from . import zoo

    if not _in_local_hub_cache(repo):
        start = time.monotonic()
        if not hub_reachable(timeout=3.0):
            bundled = ", ".join(repr(n) for n in zoo.BUNDLED_MODELS)
            raise ModelUnavailableError(
                f"{repo!r} lives on the Hugging Face hub, which cannot be reached from here "
                f"(checked in {time.monotonic() - start:.1f} s; HF_HUB_OFFLINE="
                f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Use a bundled model instead: "
                f"{bundled}; or run this chapter in Colab, where the hub is reachable."
            )
        print(f"Downloading {repo} from the Hugging Face hub (once; later loads read the local copy)...",
              flush=True)
    with _quiet_loading():
        return _boot_transformers(repo, device)
