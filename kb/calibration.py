"""When to answer: a logistic model over three features of a search, and its fitting.

Similarity alone cannot say whether the best entry is the right one: spoken
questions that share a topic but not an intent ("can I extend my warranty")
score as high as real matches. The decision uses three features of the
candidates: the best entry's fused score, its margin over the runner-up and
its BM25 score. A logistic regression over them gives the probability that
the best entry is right; the bot answers when that reaches `threshold`.

`hotline kb calibrate QUESTIONS` fits the model on labelled caller turns and
reports its cross-validated accuracy; kb/calibration.json is the shipped one
(see docs/design.md for how it was fitted and what it scores).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import CalibrationError

DEFAULT_FILE = Path(__file__).with_name("calibration.json")
FEATURES = ("score", "margin", "bm25")
REGULARISATION_C = 0.1
"""Inverse L2 strength: three features and a few dozen turns call for a strong prior."""
CV_FOLDS = 5
CV_REPEATS = 20
MIN_TURNS = 20


@dataclass(frozen=True)
class Calibration:
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float
    """Answer when the probability that the best entry is right is at least this."""
    clarify_min_score: float = 0.40
    """Offer a choice of two only if the runner-up scores at least this ..."""
    clarify_max_margin: float = 0.03
    """... and the best leads it by less than this."""
    fitted: dict[str, Any] = field(default_factory=dict)
    """Provenance: what it was fitted on and how it scored in cross-validation."""

    def probability(self, features: Sequence[float]) -> float:
        z = self.intercept + sum(c * (x - m) / s for c, x, m, s in
                                 zip(self.coef, features, self.mean, self.scale, strict=True))
        return 1.0 / (1.0 + math.exp(-z))

    @classmethod
    def never_answer(cls) -> Calibration:
        """A decision that never answers: for computing features before there is a calibration."""
        n = len(FEATURES)
        return cls(mean=[0.0] * n, scale=[1.0] * n, coef=[0.0] * n, intercept=0.0,
                   threshold=2.0)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        path = path or DEFAULT_FILE
        try:
            data = json.loads(path.read_text())
            calibration = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise CalibrationError(f"{path}: not a usable calibration: {exc}") from exc
        if not len(calibration.coef) == len(calibration.mean) == len(calibration.scale) \
                == len(FEATURES):
            raise CalibrationError(f"{path}: expected {len(FEATURES)} coefficients")
        return calibration


def fit(features: np.ndarray, right: np.ndarray, in_scope: np.ndarray,
        fitted: dict[str, Any] | None = None) -> Calibration:
    """Fit on turns: `right` = the best entry is the expected one, `in_scope` = one was expected."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if right.all() or not right.any():
        raise CalibrationError("need turns the search gets right and turns it does not")
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=REGULARISATION_C, max_iter=1000)
    model.fit(scaler.transform(features), right)
    probabilities = model.predict_proba(scaler.transform(features))[:, 1]
    return Calibration(mean=[float(v) for v in scaler.mean_],
                       scale=[float(v) for v in scaler.scale_],
                       coef=[float(v) for v in model.coef_[0]],
                       intercept=float(model.intercept_[0]),
                       threshold=best_threshold(probabilities, right, in_scope),
                       fitted=fitted or {})


def best_threshold(probabilities: np.ndarray, right: np.ndarray, in_scope: np.ndarray) -> float:
    """The threshold with the best accuracy: the middle of the widest best plateau."""
    values = np.unique(probabilities)
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2,
                           [values[-1] + 1e-6]])
    accuracy = np.array([accuracy_at(probabilities >= c, right, in_scope) for c in cuts])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(cuts[best[len(best) // 2]])


def correct(answered: np.ndarray, right: np.ndarray, in_scope: np.ndarray) -> np.ndarray:
    """Per turn: answered with the expected entry, or (out of scope) not answered."""
    result: np.ndarray = np.where(in_scope, answered & right, ~answered)
    return result


def accuracy_at(answered: np.ndarray, right: np.ndarray, in_scope: np.ndarray) -> float:
    return float(correct(answered, right, in_scope).mean())


def cross_validate(features: np.ndarray, right: np.ndarray, in_scope: np.ndarray,
                   folds: int = CV_FOLDS, repeats: int = CV_REPEATS) -> dict[str, float]:
    """Repeated stratified k-fold of the whole fit (threshold included): mean and spread."""
    if len(features) < MIN_TURNS:
        raise CalibrationError(f"need at least {MIN_TURNS} labelled turns, got {len(features)}")

    def answer(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        calibration = fit(features[train], right[train], in_scope[train])
        return np.array([calibration.probability(f) >= calibration.threshold
                         for f in features[test]])

    return repeated_cv(answer, right, in_scope, folds, repeats)


def repeated_cv(answer: Callable[[np.ndarray, np.ndarray], np.ndarray], right: np.ndarray,
                in_scope: np.ndarray, folds: int = CV_FOLDS,
                repeats: int = CV_REPEATS) -> dict[str, float]:
    """Score a decision fitted by `answer(train, test)` (which turns of `test` it answers)
    over repeated stratified k-fold splits: the mean over repeats, and its spread."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    runs = []
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=0)
    answered = np.zeros(len(right), dtype=bool)
    for i, (train, test) in enumerate(splitter.split(np.zeros(len(right)), in_scope)):
        answered[test] = answer(train, test)
        if (i + 1) % folds == 0:
            ok = correct(answered, right, in_scope)
            runs.append((ok.mean(), ok[in_scope].mean(), ok[~in_scope].mean()))
    result = np.array(runs)
    return {"overall": float(result[:, 0].mean()), "overall_std": float(result[:, 0].std()),
            "in_scope": float(result[:, 1].mean()), "out_of_scope": float(result[:, 2].mean()),
            "folds": folds, "repeats": repeats}
