"""Architectures of the zoo models and how their checkpoints are saved and loaded.

``rs-gpt2-4l`` is a Hugging Face ``GPT2LMHeadModel`` saved with
``save_pretrained`` so that ``TransformerBridge.boot_transformers(folder)``
loads it directly.  ``rs-attn-2l`` is a TransformerLens-native
attention-only model: its plain ``NativeModel`` state dict is saved as
``model.safetensors`` next to ``native_config.json``, and ``load_native`` rebuilds
it with ``TransformerBridge.boot_native(config, tokenizer=...)`` and copies
the weights in, failing unless every saved tensor matches exactly one
parameter of the bridge's model and vice versa.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

NATIVE_CONFIG = "native_config.json"


def gpt2_model(vocab: int, n_layer: int, d_model: int, n_head: int, n_ctx: int, bos: int,
               init_std: float = 0.02):
    """A fresh GPT-2-architecture LM (pre-LN, learned positions, GELU, tied embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layer,
                     n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=bos, eos_token_id=bos, pad_token_id=bos, tie_word_embeddings=True,
                     initializer_range=init_std)
    return GPT2LMHeadModel(cfg)


def native_config(vocab: int, n_layers: int, d_model: int, n_heads: int, n_ctx: int, seed: int = 0) -> dict:
    """Config dict for ``TransformerBridge.boot_native`` (attention-only, LayerNorm, learned positions)."""
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    return dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
                n_ctx=n_ctx, d_vocab=vocab, attn_only=True, normalization_type="LN",
                positional_embedding_type="standard", seed=seed)


def native_model(config: dict, tie_embeddings: bool = False):
    """A freshly initialised plain ``NativeModel`` (no bridge wrappers) for training.

    ``tie_embeddings`` makes the unembedding share the embedding matrix during
    training (NativeModel has no such option, so the head weight is replaced);
    the saved checkpoint stores both, equal, as ordinary untied weights.
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import NativeModel, initialize_native_model

    cfg = TransformerBridgeConfig.from_dict(dict(config))
    model = NativeModel(cfg)
    initialize_native_model(model, cfg)
    if tie_embeddings:
        model.head.weight = model.tok_embed.weight  # [d_vocab, d_model] both
    return model


def save_native(model, config: dict, out_dir: Path) -> None:
    from safetensors.torch import save_file

    # clone: a tied head shares storage with the embedding, which safetensors refuses
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out_dir / "model.safetensors"))
    (out_dir / NATIVE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def load_native(folder: Path, tokenizer, device="cpu"):
    """Rebuild the attention-only bridge from ``folder`` and load its weights strictly."""
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)

    config = json.loads((folder / NATIVE_CONFIG).read_text())
    config["init_weights"] = False  # the weights are overwritten below
    bridge = TransformerBridge.boot_native(config, tokenizer=tokenizer, device=device)
    # The bridge wraps each submodule; strip the wrapper names to get NativeModel's keys.
    params: dict[str, torch.nn.Parameter] = {}
    for name, p in bridge.original_model.named_parameters(remove_duplicate=False):
        params.setdefault(name.replace("._original_component", ""), p)
    saved = load_file(str(folder / "model.safetensors"))
    missing, unexpected = set(params) - set(saved), set(saved) - set(params)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint mismatch: missing={sorted(missing)} unexpected={sorted(unexpected)}")
    with torch.no_grad():
        for k, p in params.items():
            if p.shape != saved[k].shape:
                raise RuntimeError(f"shape mismatch for {k}: {tuple(p.shape)} vs {tuple(saved[k].shape)}")
            p.copy_(saved[k].to(p.device, p.dtype))
    bridge.eval()
    return bridge


def load_gpt2(folder: Path, device="cpu"):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device=device)
    bridge.eval()
    return bridge


def load_folder(folder, device="cpu"):
    """Load either kind of zoo checkpoint folder (it must contain its tokenizer files)."""
    from .tokenizer import load_tokenizer_from

    folder = Path(folder)
    if (folder / NATIVE_CONFIG).exists():
        return load_native(folder, load_tokenizer_from(folder), device=device)
    if (folder / "config.json").exists():
        return load_gpt2(folder, device=device)
    raise FileNotFoundError(f"{folder} holds no zoo checkpoint")
