"""Search the FAQ and decide: answer, ask which of two was meant, or admit it doesn't know.

Each entry gets a fused score from the caller's normalised turn:

    (2 * mean cosine to the entry's questions
     + 2 * cosine to its answer
     + 3 * token match: for each content word piece of the turn, its best
           cosine among the entry's word pieces, averaged)  / 7
    + 0.5 if the turn names an alarm code the entry carries,
      - 0.5 if it names a code the entry does not carry.

The weights were chosen by leave-one-question-out ranking on the FAQ alone.
The decision is kb.calibration's: the probability that the best entry is
right, from its score, its margin and its BM25 score. When the bot will not
answer but the two best are both plausible and nearly tied, it says `clarify`
so the caller can be asked which one they meant.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from prometheus_client import Counter, Histogram
from rank_bm25 import BM25Okapi

from kb.calibration import Calibration
from kb.encoder import Embedding, Encoder
from kb.faq import Faq
from kb.index import Index, normaliser_for
from kb.text import STOP_WORDS, content_words

WEIGHTS = {"questions": 2.0, "answer": 2.0, "pieces": 3.0}
CODE_BONUS = 0.5
CANDIDATES = 3
"""How many candidates a result lists."""
STOP_PIECES = STOP_WORDS | {"##s"}
SEARCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Process-wide; `ivr.metrics` registers them with each server's registry.
SEARCH_SECONDS = Histogram("hotline_kb_search_seconds", "Time to search the FAQ for one "
                           "caller turn", buckets=SEARCH_BUCKETS_S, registry=None)
ANSWERS = Counter("hotline_kb_answers", "FAQ searches by decision: answer, clarify or none",
                  ["decision"], registry=None)


class Decision(StrEnum):
    ANSWER = "answer"
    CLARIFY = "clarify"
    NONE = "none"


@dataclass(frozen=True)
class Candidate:
    id: str
    score: float


@dataclass(frozen=True)
class Result:
    decision: Decision
    id: str | None
    """The entry answered with; None unless the decision is `answer`."""
    score: float
    """The best entry's fused score."""
    confidence: float
    """The calibrated probability that the best entry is the right one."""
    answer: str | None
    candidates: list[Candidate]
    text: str = ""
    """The turn as normalised for searching."""
    elapsed_ms: float = 0.0
    features: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    def to_dict(self) -> dict[str, object]:
        return {"decision": str(self.decision), "id": self.id, "score": round(self.score, 4),
                "confidence": round(self.confidence, 4), "answer": self.answer,
                "candidates": [{"id": c.id, "score": round(c.score, 4)}
                               for c in self.candidates]}


class Searcher:
    """Answers caller turns from one FAQ, with its index, encoder and calibration."""

    def __init__(self, faq: Faq, index: Index, calibration: Calibration,
                 encoder: Encoder | None = None) -> None:
        if index.entry_ids != [e.id for e in faq.entries]:
            raise ValueError("the index was built for another FAQ")
        self.faq = faq
        self.index = index
        self.calibration = calibration
        self.encoder = encoder or Encoder(index.directory)
        self.normalise = normaliser_for(faq)
        self.bm25 = BM25Okapi(index.documents)
        counts = np.bincount(index.question_entry, minlength=len(faq.entries))
        self._questions_per_entry = counts.astype(np.float32)

    def ask(self, text: str) -> Result:
        """Search for one caller turn."""
        started = time.perf_counter()
        normalised = self.normalise(text)
        scores, bm25 = self.scores(normalised, self.encoder.encode(normalised))
        order = np.argsort(-scores, kind="stable")
        best, second = int(order[0]), int(order[1])
        features = (float(scores[best]), float(scores[best] - scores[second]), float(bm25[best]))
        confidence = self.calibration.probability(features)
        decision = self._decide(confidence, float(scores[second]), features[1])
        entry = self.faq.entries[best]
        result = Result(
            decision=decision,
            id=entry.id if decision is Decision.ANSWER else None,
            score=features[0], confidence=confidence,
            answer=entry.answer if decision is Decision.ANSWER else None,
            candidates=[Candidate(self.index.entry_ids[i], float(scores[i]))
                        for i in order[:CANDIDATES]],
            text=normalised, elapsed_ms=(time.perf_counter() - started) * 1000,
            features=features)
        SEARCH_SECONDS.observe(result.elapsed_ms / 1000)
        ANSWERS.labels(decision.value).inc()
        return result

    def scores(self, normalised: str, embedding: Embedding) -> tuple[np.ndarray, np.ndarray]:
        """Each entry's fused score and BM25 score for a normalised turn."""
        index = self.index
        per_question = index.question_vectors @ embedding.vector
        questions = np.bincount(index.question_entry, weights=per_question,
                                minlength=len(index.entry_ids)) / self._questions_per_entry
        answer = index.answer_vectors @ embedding.vector
        fused = (WEIGHTS["questions"] * questions + WEIGHTS["answer"] * answer
                 + WEIGHTS["pieces"] * self._piece_match(embedding)) / sum(WEIGHTS.values())
        fused += CODE_BONUS * self._code_match(normalised)
        words = content_words(normalised)
        bm25 = self.bm25.get_scores(words) if words else np.zeros(len(index.entry_ids))
        return fused, np.asarray(bm25)

    def _piece_match(self, embedding: Embedding) -> np.ndarray:
        keep = [i for i, p in enumerate(embedding.pieces) if p not in STOP_PIECES]
        pieces = embedding.piece_vectors[keep] if keep else embedding.piece_vectors
        if not len(pieces):
            return np.zeros(len(self.index.entry_ids))
        similarity = pieces @ self.index.piece_vectors.T
        best = np.maximum.reduceat(similarity, self.index.piece_starts, axis=1)
        result: np.ndarray = best.mean(axis=0)
        return result

    def _code_match(self, normalised: str) -> np.ndarray:
        prefixes = self.normalise.code_prefixes
        said = {w for w in normalised.split()
                if re.fullmatch(r"[a-z]\d{2,3}", w) and w[0] in prefixes}
        if not said:
            return np.zeros(len(self.index.entry_ids))
        return np.array([1.0 if said & codes else -1.0 for codes in self.index.codes])

    def _decide(self, confidence: float, second: float, margin: float) -> Decision:
        calibration = self.calibration
        if confidence >= calibration.threshold:
            return Decision.ANSWER
        if second >= calibration.clarify_min_score and margin < calibration.clarify_max_margin:
            return Decision.CLARIFY
        return Decision.NONE
