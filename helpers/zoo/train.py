"""Train a zoo model from scratch: corpus -> tokenizer -> model -> checkpoint + card.

Usage::

    python -m helpers.zoo.train rs-gpt2-4l --threads 2   # 28 min on 2 CPU cores (card: training_seconds)
    python -m helpers.zoo.train rs-attn-2l --threads 1   # 12 min on 1 thread
    python -m helpers.zoo.train rs-attn-2l --tiny --out /tmp/x   # seconds, smoke test

The recipe is deterministic up to floating-point non-determinism of the
device: the corpus comes from ``generate_corpus(CORPUS_SEED, N_DOCS)``, the
tokenizer is trained on its first ``TOKENIZER_DOCS`` documents (so both models
get the same tokenizer), and each training sequence starts with BOS.  A fixed
fraction ``random_frac`` of the sequences consists of uniformly random
non-special tokens arranged as spans that are immediately repeated, so that
induction works on arbitrary tokens.  A recipe with ``random_frac_late`` uses a
two-stage curriculum: once a logged prefix-matching score reaches ``SWITCH_AT``
(an induction head exists), the fraction drops to ``random_frac_late`` and the
freed batch goes to text; the card records the step of the switch.  The loop is plain PyTorch: AdamW, linear
warmup, a constant learning rate, then cosine decay to 10 % over the last 30 %
of the steps, gradient clipping at 1.0.  Every
``log_every`` steps it records the training loss, the in-context-learning score
and the best prefix-matching score (definitions in ``ICL_DEFINITION`` and
``PREFIX_DEFINITION``) in ``training_log.json``; for the language model it also
logs held-out fact recall and IOI top-1 (``TASK_LOG``), so a reader can see when
each skill appears.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import copy_losses, per_token_loss, prefix_matching_scores, repeated_token_batch
from . import corpus as C
from . import world as W
from .modeling import gpt2_model, native_config, native_model, save_native

CORPUS_SEED = 0
N_DOCS = 200_000
TOKENIZER_DOCS = 30_000
ICL_EARLY, ICL_LATE = (25, 50), (200, 250)  # for n_ctx 256; scaled by n_ctx / 256 otherwise
ICL_DEFINITION = (
    "ICL score = mean next-token loss (nats) of the tokens at positions 200-249 minus that of the "
    "tokens at positions 25-49 (position 0 is BOS; for a context n_ctx other than 256 both ranges are "
    "scaled by n_ctx/256) over a fixed evaluation set of 32 windows of n_ctx "
    "tokens drawn from the training mixture (corpus windows and, with probability random_frac, "
    "repeated random-token sequences). Negative = later tokens are easier thanks to the context.")
TEXT_ICL = dict(n_seqs=64, seed=11)  # as helpers.organisms.icl_score_on_text, so the last row matches the chapters
ICL_TEXT_DEFINITION = (
    "icl_score_text = the ICL score's position ranges and difference, on 64 windows of n_ctx tokens of "
    "held-out corpus text only (generate_corpus seed 11, never the training seed 0; documents joined with "
    "BOS and cut into windows, as helpers.zoo.evals.corpus_windows), with no repeated random-token "
    "sequences. Logged from this field's introduction on; older logs lack it.")
PREFIX_DEFINITION = (
    "prefix-matching score of a head = mean attention from each token of the second copy of "
    "BOS + R + R (R: 50 uniformly random non-special tokens, 8 sequences) to the token right after "
    "that token's earlier occurrence; the log records the best head.")

RECIPES = {
    "rs-gpt2-4l": dict(arch="gpt2", n_layers=4, d_model=128, n_heads=4, n_ctx=128, batch=32,
                       steps=7000, lr=3e-3, warmup=100, random_frac=0.60, random_frac_late=0.25,
                       log_every=100, init_std=0.05),
    "rs-attn-2l": dict(arch="attn", n_layers=2, d_model=128, n_heads=4, n_ctx=128, batch=32,
                       steps=3000, lr=3e-3, warmup=100, random_frac=0.75, random_frac_late=None,
                       log_every=25, tie_embeddings=True),
}
TINY = dict(d_model=32, n_heads=2, n_ctx=128, batch=4, steps=4, warmup=2, log_every=2)
SWITCH_AT = 0.5  # random_frac -> random_frac_late once the best prefix-matching score reaches this
TASK_LOG = dict(ioi=200, ioi_seed=7)  # language-model task metrics logged during training (gpt2 arch)


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_tokenizer(docs: list[str], tiny: bool):
    from .tokenizer import train_tokenizer

    return train_tokenizer(docs[: (2000 if tiny else TOKENIZER_DOCS)])


def tokenize_stream(tok, docs: list[str]) -> tuple[torch.Tensor, list[int]]:
    """One long id stream: for every document, the EOT/BOS id followed by its tokens.
    Returns the stream and the offsets where documents start (at their BOS)."""
    bos = tok.bos_token_id
    ids, starts = [], []
    for chunk in range(0, len(docs), 10_000):
        for doc in tok(docs[chunk:chunk + 10_000], add_special_tokens=False)["input_ids"]:
            starts.append(len(ids))
            ids.append(bos)
            ids.extend(doc)
    return torch.tensor(ids, dtype=torch.long), starts


class Sampler:
    """Draws [batch, n_ctx + 1] training windows; every row starts with BOS."""

    def __init__(self, stream, starts, n_ctx, vocab, bos, random_frac, seed):
        self.stream, self.n_ctx, self.vocab, self.bos, self.frac = stream, n_ctx, vocab, bos, random_frac
        self.max_span = min(100, n_ctx // 2)
        self.starts = [s for s in starts if s + n_ctx + 1 <= len(stream)]
        if not self.starts:
            raise ValueError("corpus too small for the context length")
        self.rng = random.Random(seed)

    def row(self) -> torch.Tensor:
        if self.rng.random() < self.frac:  # repeated uniformly random tokens (ids 1.. are non-special)
            return torch.tensor([self.bos] + C.random_repeat_tokens(
                self.rng, self.n_ctx, 1, self.vocab, max_span=self.max_span))
        s = self.rng.choice(self.starts)
        return self.stream[s:s + self.n_ctx + 1]

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self.row() for _ in range(n)])  # [n, n_ctx+1]


def forward(model, arch: str, x: torch.Tensor) -> torch.Tensor:
    return model(x).logits if arch == "gpt2" else model(x)  # [batch, pos, vocab]


def attention_patterns(model, arch: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention patterns of every layer, each [batch, heads, q, k], from the raw model."""
    if arch == "gpt2":  # sdpa kernels do not return patterns; switch to eager briefly
        model.set_attn_implementation("eager")
        try:
            return list(model(x, output_attentions=True).attentions)
        finally:
            model.set_attn_implementation("sdpa")
    pats, hooks = [], []
    for layer in model.layers:
        hooks.append(layer.attn.register_forward_hook(lambda m, i, o: pats.append(o[1])))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return pats


class _RawLM:
    """Just enough of a bridge (call -> logits, ``tokenizer``, ``parameters``) for the
    task evaluations of :mod:`helpers.zoo.evals` to run on the raw model during training."""

    def __init__(self, model, arch: str, tok):
        self.model, self.arch, self.tokenizer = model, arch, tok

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, self.arch, x)

    def parameters(self):
        return self.model.parameters()


@torch.no_grad()
def task_metrics(model, arch: str, tok, ioi_items, heldout_items) -> dict:
    """Held-out fact recall and IOI top-1, as the card measures them, on the raw model."""
    from .evals import fact_recall, ioi_accuracy

    lm = _RawLM(model, arch, tok)
    return {"heldout_fact_recall": fact_recall(lm, heldout_items)["accuracy"],
            "ioi_top1": ioi_accuracy(lm, ioi_items)["accuracy"]}


def _icl_ranges(nll: torch.Tensor, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss of the early and late token ranges of ``ICL_DEFINITION``; nll[:, i] is the loss of token i + 1."""
    f = n_ctx / 256
    early = nll[:, int(ICL_EARLY[0] * f) - 1:int(ICL_EARLY[1] * f) - 1].mean()
    late = nll[:, int(ICL_LATE[0] * f) - 1:int(ICL_LATE[1] * f) - 1].mean()
    return early, late


@torch.no_grad()
def log_metrics(model, arch, icl_batch, rep_batch, length, text_batch=None) -> dict:
    x, y = icl_batch[:, :-1], icl_batch[:, 1:]
    nll = F.cross_entropy(forward(model, arch, x).transpose(1, 2), y, reduction="none")  # [b, pos]
    early, late = _icl_ranges(nll, x.shape[1])
    text = {}
    if text_batch is not None:  # [n, n_ctx] windows of held-out text, BOS first
        t_nll = per_token_loss(forward(model, arch, text_batch), text_batch)
        t_early, t_late = _icl_ranges(t_nll, text_batch.shape[1])
        text = {"icl_score_text": float(t_late - t_early)}
    first, second = copy_losses(per_token_loss(forward(model, arch, rep_batch), rep_batch), length)
    pm = float(prefix_matching_scores(attention_patterns(model, arch, rep_batch), length).max())
    return {"corpus_loss": float(nll.mean()), "icl_score": float(late - early),
            "loss_early": float(early), "loss_late": float(late),
            "induction_first_copy": first, "induction_second_copy": second,
            "best_prefix_matching": pm, **text}


DECAY_FRAC = 0.3  # the last 30 % of the steps decay the LR; before that it is constant


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, constant peak (induction heads form on the plateau), then cosine to 10 %."""
    if step < warmup:
        return peak * (step + 1) / warmup
    start = max(warmup, int(total * (1 - DECAY_FRAC)))
    if step < start:
        return peak
    t = (step - start) / max(1, total - start)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(name: str, out: Path, steps: int | None = None, tiny: bool = False, seed: int = 0,
          n_docs: int | None = None, threads: int | None = None, **overrides) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(RECIPES)}")
    from tqdm.auto import tqdm

    r = dict(RECIPES[name]) | (TINY if tiny else {})
    if steps is not None:
        r["steps"] = steps
    unknown = set(overrides) - set(r)
    if unknown:
        raise ValueError(f"unknown recipe overrides {sorted(unknown)}; valid: {sorted(r)}")
    r.update({k: v for k, v in overrides.items() if v is not None})
    n_docs = n_docs or (2000 if tiny else N_DOCS)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    device = pick_device()
    t0 = time.time()

    docs = C.generate_corpus(CORPUS_SEED, n_docs)
    sha = C.corpus_sha256(docs)
    if not tiny:  # held-out (fact, template) combinations must never be trained on
        text = "\n".join(docs)
        leaks = [p for p, a in W.heldout_fact_prompts() if f"{p} {a}" in text]
        if leaks:
            raise RuntimeError(f"held-out prompts leaked into the corpus: {leaks[:5]}")
        del text
    tok = build_tokenizer(docs, tiny)
    vocab, bos = len(tok), tok.bos_token_id
    stream, starts = tokenize_stream(tok, docs)
    print(f"corpus: {n_docs} docs, {len(stream):,} tokens, sha256 {sha[:16]}...; vocab {vocab}", flush=True)

    if r["arch"] == "gpt2":
        model = gpt2_model(vocab, r["n_layers"], r["d_model"], r["n_heads"], r["n_ctx"], bos,
                           init_std=r.get("init_std", 0.02))
        ncfg = None
    else:
        ncfg = native_config(vocab, r["n_layers"], r["d_model"], r["n_heads"], r["n_ctx"], seed)
        model = native_model(ncfg, tie_embeddings=r.get("tie_embeddings", False))
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())

    sampler = Sampler(stream, starts, r["n_ctx"], vocab, bos, r["random_frac"], seed)
    evs = Sampler(stream, starts, r["n_ctx"], vocab, bos, r["random_frac"], seed + 1000)
    icl_batch = evs.batch(4 if tiny else 32).to(device)
    length = min(50, (r["n_ctx"] - 1) // 2)
    from .evals import text_windows
    text_batch = text_windows(tok, 4 if tiny else TEXT_ICL["n_seqs"], r["n_ctx"], TEXT_ICL["seed"]).to(device)
    rep_batch = repeated_token_batch(torch.arange(1, vocab), bos, 8, length, seed + 2000).to(device)  # ids 1.. are non-special

    tasks = None
    if r["arch"] == "gpt2":  # the language model's task metrics are logged too
        tasks = (C.ioi_prompts(4 if tiny else TASK_LOG["ioi"], seed=TASK_LOG["ioi_seed"]),
                 W.heldout_fact_prompts()[::64 if tiny else 1])

    def measure(step: int) -> dict:
        model.eval()
        row = {"step": step, "tokens": step * r["batch"] * r["n_ctx"], "random_frac": sampler.frac,
               "train_loss": sum(running) / len(running) if running else None,
               **log_metrics(model, r["arch"], icl_batch, rep_batch, length, text_batch)}
        if tasks is not None:
            row.update(task_metrics(model, r["arch"], tok, *tasks))
        model.train()
        return row

    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    log, running, switch_step = [], [], None
    t_train = time.time()
    bar = tqdm(range(r["steps"]), desc=name, mininterval=5)
    for step in bar:
        if step % r["log_every"] == 0:
            log.append(measure(step))
            running = []
            bar.set_postfix({k: round(log[-1][k], 3) for k in
                             ("corpus_loss", "best_prefix_matching", "heldout_fact_recall", "ioi_top1")
                             if k in log[-1]})
            # curriculum: once an induction head exists, spend more of the batch on text
            if (r.get("random_frac_late") is not None and switch_step is None
                    and log[-1]["best_prefix_matching"] >= SWITCH_AT):
                sampler.frac, switch_step = r["random_frac_late"], step
        for group in opt.param_groups:
            group["lr"] = lr_at(step, r["steps"], r["lr"], r["warmup"])
        xy = sampler.batch(r["batch"]).to(device)
        logits = forward(model, r["arch"], xy[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
    log.append(measure(r["steps"]))
    model.eval()
    train_s = time.time() - t_train

    # --- save: checkpoint + tokenizer (+ shared tokenizer copy) --------------
    out.mkdir(parents=True, exist_ok=True)
    model.cpu()
    if r["arch"] == "gpt2":
        model.save_pretrained(out, safe_serialization=True)
    else:
        save_native(model, ncfg, out)
    tok.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(
        {"icl_definition": ICL_DEFINITION, "icl_text_definition": ICL_TEXT_DEFINITION,
         "prefix_matching_definition": PREFIX_DEFINITION, "log": log}, indent=1) + "\n")

    card = {
        "name": name, "description": _describe(name), "architecture": r["arch"],
        "config": {k: v for k, v in r.items()}, "n_params": n_params, "vocab_size": vocab,
        "corpus": {"seed": CORPUS_SEED, "n_docs": n_docs, "sha256": sha, "n_tokens": len(stream),
                   "doc_mix": C.DOC_MIX, "tokenizer_docs": min(n_docs, 2000 if tiny else TOKENIZER_DOCS)},
        "random_repeat_fraction": r["random_frac"],
        "random_repeat_fraction_late": r.get("random_frac_late"),
        "random_switch_step": switch_step,
        "tokens_seen": r["steps"] * r["batch"] * r["n_ctx"],
        "training_seconds": round(train_s, 1), "total_seconds": round(time.time() - t0, 1),
        "hardware": {"device": str(device), "platform": platform.platform(),
                     "processor": platform.processor() or platform.machine(),
                     "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": "python -m helpers.zoo.train " + " ".join(sys.argv[1:]) if __name__ == "__main__"
                   else f"helpers.zoo.train.train({name!r}, steps={steps}, tiny={tiny})",
        "icl_definition": ICL_DEFINITION, "prefix_matching_definition": PREFIX_DEFINITION,
        "final_log": log[-1], "metrics": None, "tiny": tiny,
    }
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return write_card(out)


def write_card(out: Path, metrics_only_markdown: bool = False) -> dict:
    """(Re)measure the metrics from the saved weights in ``out`` and write card.json + MODEL_CARD.md."""
    from .evals import run_all
    from .modeling import load_folder

    card = json.loads((out / "card.json").read_text())
    if not metrics_only_markdown:
        card["metrics"] = run_all(load_folder(out), quick=card["tiny"])
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "MODEL_CARD.md").write_text(_markdown(card))
    return card


BARS = {  # the quality bars of the issue; the card lists any that a model misses
    "heldout_fact_recall >= 0.95": lambda m: m["heldout_fact_recall"] >= 0.95,
    "ioi top-1 >= 0.90": lambda m: m["ioi"]["accuracy"] >= 0.90,
    "induction 2nd-copy loss <= 1.0": lambda m: m["induction"]["second_copy"] <= 1.0,
    "best prefix-matching head >= 0.5": lambda m: m["best_prefix_matching"]["score"] >= 0.5,
    "logit lens: ' Paris' top at output, not at embedding":
        lambda m: m["logit_lens_eiffel_ranks"][-1] == 0 and m["logit_lens_eiffel_ranks"][0] > 0,
}
BARS_BY_MODEL = {"rs-gpt2-4l": list(BARS), "rs-attn-2l": list(BARS)[2:4]}


def _describe(name: str) -> str:
    from . import BUNDLED_MODELS

    return BUNDLED_MODELS.get(name, name)


def _markdown(card: dict) -> str:
    m = card["metrics"]
    ind = m["induction"]
    return f"""# {card['name']}

{card['description']}.

Trained from scratch by The Residual Stream on a synthetic corpus it generates itself
(`helpers/zoo/corpus.py`), so the training distribution is known exactly.

## Configuration
- architecture: {card['architecture']}; parameters: {card['n_params']:,}; vocabulary: {card['vocab_size']}
- config: `{json.dumps(card['config'])}`

## Data
- corpus: `generate_corpus(seed={card['corpus']['seed']}, n_docs={card['corpus']['n_docs']})`,
  sha256 `{card['corpus']['sha256']}`, {card['corpus']['n_tokens']:,} tokens; document mix {card['corpus']['doc_mix']}
- tokenizer: byte-level BPE trained on the first {card['corpus']['tokenizer_docs']} documents
- {card['random_repeat_fraction']:.0%} of the training sequences are uniformly random non-special tokens
  arranged as spans of random length 8-100 that are immediately repeated (teaches induction on any tokens){_curriculum(card)}
- every training sequence starts with BOS (`<|endoftext|>`), as `TransformerBridge.to_tokens` does
- held out: the last template of every relation, plus one (fact, template) pair per fact

## Training
- tokens seen: {card['tokens_seen']:,}; training time: {card['training_seconds']} s (total {card['total_seconds']} s)
- hardware: {card['hardware']}
- command: `{card['command']}`
{('- note: ' + card['note']) if card.get('note') else ''}

## Metrics (measured from the shipped weights by `helpers.zoo.evals.run_all`)
| metric | value |
|---|---|
| held-out (fact, template) top-1 recall | {m['heldout_fact_recall']:.3f} |
| &nbsp; of which held-out pairs / held-out templates | {m['heldout_pairs_recall']:.3f} / {m['heldout_templates_recall']:.3f} |
| training-template fact recall | {m['train_fact_recall']:.3f} |
| IOI top-1 / mean logit diff | {m['ioi']['accuracy']:.3f} / {m['ioi']['logit_diff']:.2f} |
| repeated-name copying top-1 | {m['name_copy_accuracy']:.3f} |
| random tokens x2, loss on 1st / 2nd copy (chance {ind['chance']:.2f}) | {ind['first_copy']:.3f} / {ind['second_copy']:.3f} |
| best prefix-matching head (layer, head) | {m['best_prefix_matching']['score']:.3f} ({m['best_prefix_matching']['layer']}, {m['best_prefix_matching']['head']}) |
| logit-lens rank of " Paris" (embedding, after each layer) | {m['logit_lens_eiffel_ranks']} |
| final ICL score | {card['final_log']['icl_score']:.3f} |

ICL score: {card['icl_definition']}

Prefix matching: {card['prefix_matching_definition']}

## Quality bars
{_bars(card)}
"""


def _curriculum(card: dict) -> str:
    late, step = card.get("random_repeat_fraction_late"), card.get("random_switch_step")
    if late is None:
        return ""
    if step is None:
        return (f";\n  the recipe drops the fraction to {late:.0%} once a head's prefix-matching score "
                f"reaches {SWITCH_AT}, which never happened in this run")
    return (f";\n  from step {step}, the first logged step with a prefix-matching score >= {SWITCH_AT}, "
            f"the fraction drops to {late:.0%}")


def _bars(card: dict) -> str:
    names = BARS_BY_MODEL.get(card["name"], list(BARS))
    return "\n".join(f"- {'PASS' if BARS[b](card['metrics']) else 'MISSED'}: {b}" for b in names)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the bundled model folder)")
    ap.add_argument("--tiny", action="store_true", help="tiny model and corpus, for smoke tests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=None, help="override the recipe's batch size")
    ap.add_argument("--random-frac", type=float, default=None, help="override the random-repeat fraction")
    ap.add_argument("--recard", action="store_true", help="only re-measure metrics and rewrite the card")
    args = ap.parse_args(argv)
    from . import TOKENIZER_DIR, model_dir

    out = args.out or model_dir(args.name)
    if args.recard:
        print(json.dumps(write_card(out)["metrics"], indent=1, default=str))
        return
    card = train(args.name, out, steps=args.steps, tiny=args.tiny, seed=args.seed, threads=args.threads,
                 batch=args.batch, random_frac=args.random_frac)
    if args.out is None:  # refresh the shared tokenizer folder from the bundled model
        TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(out / f, TOKENIZER_DIR / f)
    print(json.dumps(card["metrics"], indent=1, default=str))


if __name__ == "__main__":
    main()
