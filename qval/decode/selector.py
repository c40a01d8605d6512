"""The per-instance selector of a replay: a multinomial logistic regression from prefill features to the size
each sample should get, evaluated with k-fold cross-validation so that no sample is scored by a model trained on it
(BlockPilot's per-instance policy, replayed offline)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits


@dataclass
class SelectorRun:
    """Held-out predictions plus everything needed to audit that no sample was scored by a model trained on it."""

    predictions: pd.Series  # sample id -> predicted size (from the model of that sample's fold)
    fold: pd.Series  # sample id -> fold index
    train_ids: dict[int, list[str]]  # fold index -> sample ids the fold's model was trained on
    n_folds: int
    seed: int
    l2: float


@dataclass
class _LogReg:
    """Standardisation statistics (from the training fold only) and weights incl. an intercept row."""

    mu: np.ndarray
    sd: np.ndarray
    W: np.ndarray  # (d + 1, K)

    def design(self, X: np.ndarray) -> np.ndarray:
        Xs = (X - self.mu) / self.sd
        return np.hstack([np.ones((len(Xs), 1)), Xs])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class index with the highest logit; ties go to the lower index = the smaller size."""
        return np.argmax(self.design(X) @ self.W, axis=1)


def _fit_logreg(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1.0) -> _LogReg:
    """Multinomial logistic regression: Σ cross-entropy + ½·l2·‖W‖² (intercept unpenalised), L-BFGS.

    Standardisation uses only the rows passed in, so a held-out sample cannot leak in through the scaler.
    """
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    model = _LogReg(mu, sd, np.zeros((X.shape[1] + 1, n_classes)))
    # Classes × samples: every reduction over the classes is then an elementwise one across a few long contiguous
    # rows, and the per-sample arrays are a row each. Laid out samples × classes, the fits were most of a report's
    # knob headroom.
    At = np.ascontiguousarray(model.design(X).T)
    samples = np.arange(len(y))
    penal = np.ones_like(model.W.T)
    penal[:, 0] = 0.0

    def loss_grad(w):
        Wt = w.reshape(model.W.shape).T  # classes × (features + 1)
        Z = Wt @ At
        # The max-shifted log-sum-exp in numpy: scipy's logsumexp costs ~8 ms a call here in array-API overhead.
        Z -= Z.max(axis=0)
        P = np.exp(Z)
        total = P.sum(axis=0)
        # Σ cross-entropy = Σ (log Σ exp z − z of the sample's class)
        loss = np.log(total).sum() - Z[y, samples].sum() + 0.5 * l2 * (penal * Wt * Wt).sum()
        P /= total
        P[y, samples] -= 1.0  # softmax − one-hot
        grad = P @ At.T + l2 * penal * Wt
        return loss, grad.T.ravel()

    res = minimize(loss_grad, model.W.ravel(), jac=True, method="L-BFGS-B")
    model.W = res.x.reshape(model.W.shape)
    return model


def _assign_folds(n: int, k: int, seed: int) -> np.ndarray:
    """Balanced random folds, deterministic in ``seed``."""
    perm = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=int)
    fold[perm] = np.arange(n) % k
    return fold


def _argmax_smaller(values: np.ndarray) -> np.ndarray:
    """Per-row argmax with ties → first column; columns are sorted ascending so that is the smaller size."""
    return np.argmax(values, axis=1)


def cross_validated_selector(
    cand_table: pd.DataFrame, features: pd.DataFrame, folds: int = 5, seed: int = 0, l2: float = 1.0
) -> SelectorRun:
    """Predict each sample's size with a model trained on the other folds only.

    Labels are the per-sample argmax candidate (ties → smaller).  ``cand_table`` must be complete (no NaN).
    """
    # Positions, not labels: a lookup per id (.loc with a list of ids) cost a report's 20 selectors a third of a
    # second on 10,000-sample sweeps. get_indexer raises where the features repeat a sample id.
    position = features.index.get_indexer(cand_table.index)
    known = position >= 0
    index = pd.Index(cand_table.index[known].tolist())  # built from the ids, as a Series given a list of them builds it
    if len(index) < 2:
        raise ValueError("selector needs at least 2 samples with features")
    k = min(folds, len(index))
    if k < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    cands = list(cand_table.columns)
    X = features.iloc[position[known]].to_numpy(float)
    y = _argmax_smaller(cand_table.to_numpy(float)[known])
    fold = _assign_folds(len(index), k, seed)
    id_array = index.to_numpy(object)
    pred = np.empty(len(index), dtype=int)
    train_ids = {}
    # One BLAS thread: L-BFGS makes hundreds of tiny BLAS calls per fit, and OpenBLAS's thread hand-off costs more
    # than the work (measured 20x slower for a 16-sample fit on a busy 2-core machine). Same numbers either way.
    with threadpool_limits(limits=1, user_api="blas"):
        for f in range(k):
            train, test = fold != f, fold == f
            model = _fit_logreg(X[train], y[train], len(cands), l2)
            pred[test] = model.predict(X[test])
            train_ids[f] = id_array[train].tolist()
    return SelectorRun(
        predictions=pd.Series([cands[p] for p in pred], index=index, dtype=object),
        fold=pd.Series(fold, index=index, dtype=int),
        train_ids=train_ids,
        n_folds=k,
        seed=seed,
        l2=l2,
    )
