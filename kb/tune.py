"""Adapt the packaged all-MiniLM-L6-v2 to one FAQ, then export it to ONNX.

Stock MiniLM ranks the right entry first for about 80% of spoken caller turns
on the development FAQ; after 50 contrastive steps on the FAQ's own text (and
nothing else) it is about 93%. Each step takes one entry's question as the
anchor and another of its questions, its answer or a sentence of its answer
as the positive; every other entry in the batch is a negative, and no batch
holds an entry twice, so there are no false negatives. The recipe is fixed
and seeded: the same FAQ and base model give the same weights.

Runs at build time only (`hotline kb build`, or the first search after the
FAQ changed): it needs torch and sentence-transformers, the server does not.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from kb.encoder import MODEL_FILE, TOKENIZER_FILE
from kb.errors import BuildError
from kb.faq import Faq
from kb.progress import Progress
from kb.text import Normaliser

logger = logging.getLogger(__name__)

STEPS = 50
"""Chosen on the FAQ alone (held-out FAQ questions ranked best from 20 to 60 steps)."""
LEARNING_RATE = 2e-5
SCALE = 20.0
"""Similarity scale of the in-batch softmax (the multiple-negatives ranking loss)."""
BATCH_ENTRIES = 64
"""At most this many entries per step; small FAQs put every entry in each step."""
SEED = 0
RECIPE = f"mnrl-{STEPS}-{LEARNING_RATE}-{SCALE}-{BATCH_ENTRIES}-{SEED}-v1"
"""Part of the index key: changing the recipe rebuilds every index."""
ONNX_OPSET = 17


def sentences(text: str) -> list[str]:
    """Split an answer into its sentences."""
    return [s for s in re.split(r"(?<=[.;!?])\s+", text.strip()) if s]


def tune_and_export(faq: Faq, normalise: Normaliser, base: Path, out: Path,
                    steps: int = STEPS, seed: int = SEED,
                    progress: Progress | None = None) -> None:
    """Fine-tune the sentence-transformers model in `base` on `faq`; write ONNX into `out`.

    `progress` hears of each training step done, out of `steps`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise BuildError(f"building the FAQ index needs the kb extra ({exc}); "
                         "install with: pip install -e '.[kb]'") from exc
    started = time.monotonic()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SentenceTransformer(str(base), device="cpu")
    _train(model, _pools(faq, normalise), steps, random.Random(seed), progress)
    out.mkdir(parents=True, exist_ok=True)
    _export(model[0].model, model.preprocess(["an example sentence"]), out / MODEL_FILE)
    shutil.copyfile(base / TOKENIZER_FILE, out / TOKENIZER_FILE)
    logger.info("Tuned the FAQ model on %d entries in %.1f s", len(faq.entries),
                time.monotonic() - started)


def _pools(faq: Faq, normalise: Normaliser) -> list[tuple[list[str], list[str]]]:
    """For each entry: the anchors (its questions) and the positives to pair them with."""
    pools = []
    for entry in faq.entries:
        questions = [normalise(q) for q in entry.questions]
        answers = [normalise(entry.answer)] + [normalise(s) for s in sentences(entry.answer)]
        pools.append((questions, questions + answers))
    return pools


def _train(model: Any, pools: list[tuple[list[str], list[str]]], steps: int,
           rng: random.Random, progress: Progress | None) -> None:
    import torch
    import torch.nn.functional as F

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    for step in range(steps):
        batch = rng.sample(pools, min(BATCH_ENTRIES, len(pools)))
        anchors, positives = [], []
        for questions, candidates in batch:
            anchor = rng.choice(questions)
            anchors.append(anchor)
            positives.append(rng.choice([c for c in candidates if c != anchor] or candidates))
        a = model(model.preprocess(anchors))["sentence_embedding"]
        b = model(model.preprocess(positives))["sentence_embedding"]
        similarity = SCALE * a @ b.T
        labels = torch.arange(len(anchors))
        loss = (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if progress is not None:
            progress(step + 1, steps)
    model.eval()


def _export(bert: Any, example: dict[str, Any], path: Path) -> None:
    """Export the transformer (its last hidden state; pooling is done by kb.encoder)."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = tuple(example[name] for name in names)
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    partial = path.with_suffix(".partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState(bert).eval(), inputs, str(partial),
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    except Exception as exc:  # the exporter raises many unrelated types
        partial.unlink(missing_ok=True)
        raise BuildError(f"exporting the FAQ model to ONNX failed: {exc}") from exc
    partial.replace(path)
