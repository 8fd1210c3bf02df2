"""Sentence and token embeddings at query time, with ONNX Runtime.

The index directory holds the (FAQ-tuned) MiniLM exported to ONNX and its
tokenizer. Running it with ONNX Runtime on one thread gives the same vectors
as sentence-transformers (cosine 1.000000) in about half the time, without
importing torch into the server: see docs/design.md, "FAQ search".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kb.errors import IndexMissing

Vectors = npt.NDArray[np.float32]

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 word pieces; longer text is cut."""
THREADS = 1
"""One intra-op thread: the other core belongs to the RTP engine and the recognizer."""


@dataclass(frozen=True)
class Embedding:
    """One text: its unit sentence vector and a unit vector per word piece."""

    vector: Vectors
    pieces: list[str]
    piece_vectors: Vectors


class Encoder:
    """Encodes text with the ONNX model and tokenizer stored in `directory`."""

    def __init__(self, directory: Path, threads: int = THREADS) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model, tokenizer = directory / MODEL_FILE, directory / TOKENIZER_FILE
        if not model.is_file() or not tokenizer.is_file():
            raise IndexMissing(f"{directory}: no {MODEL_FILE} or {TOKENIZER_FILE}; "
                               "run `hotline kb build`")
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(model), options,
                                                    providers=["CPUExecutionProvider"])

    def encode(self, text: str) -> Embedding:
        """Embed one text."""
        encoding = self.tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, feeds)[0][0].astype(np.float32)
        vector = hidden.mean(axis=0)
        pieces = hidden[1:-1]  # without [CLS] and [SEP]
        return Embedding(vector=_unit(vector),
                         pieces=list(encoding.tokens[1:-1]),
                         piece_vectors=_unit(pieces) if len(pieces) else hidden[:0])


def _unit(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    result: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return result
