"""``metrics``: disentanglement metrics of the β-VAE literature, on data with
known ground-truth factors.

Four scores, each computed as its paper defines it, with the sample sizes
of the reimplementation in disentanglement_lib (Locatello et al. 2019,
"Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations", ``config/unsupervised_study_v1/metric_configs/*.gin``):

- :func:`higgins_metric` (Higgins et al. 2017, β-VAE): L = 64 pairs per
  point, 10,000 training and 5,000 evaluation points.
- :func:`factorvae_metric` (Kim & Mnih 2018, FactorVAE): 64 samples per
  vote, 10,000 training and 5,000 evaluation votes, latent variances from
  10,000 points, latents of standard deviation below 0.05 pruned.
- :func:`mig` (Chen et al. 2018, β-TCVAE): 10,000 points, 20-bin histograms.
- :func:`dci_disentanglement` (Eastwood & Williams 2018): 10,000 training
  and 5,000 test points; importance from a Lasso, not from gradient-boosted
  trees (see below).

Every function takes an ``encode(images) -> mu`` callable (``[N, ...]`` ->
``[N, Z]``) and a :class:`GroundTruth`: ``sample(n, rng)`` draws factor
classes ``[n, K]`` and ``render(factors)`` turns them into what ``encode``
eats. Tests pass synthetic "encoders" (the factors themselves, a rotation of
them, constants); the command line passes a trained model and the dSprites
generator of :mod:`bvae_tools.dsprites`.

Where this differs from disentanglement_lib (numpy and torch only, no
scikit-learn), the docstring of the metric says so. In short:

- Higgins' linear classifier is a multinomial logistic regression fitted
  here (:func:`fit_softmax`) on standardised inputs;
- DCI's importance matrix is the absolute weights of a Lasso per factor (one
  of the two predictors of Eastwood & Williams, fitted here by
  :func:`lasso`), where Locatello et al. use gradient-boosted trees; its
  informativeness is Eastwood & Williams' prediction error (NRMSE), not
  Locatello et al.'s classification accuracy;
- the FactorVAE metric of a representation with no active latent is chance
  (the majority vote of one "no latent" bucket), where disentanglement_lib
  reports 0.

Command line: ``python -m bvae_tools metrics MODEL_OR_RUN --dsprites``; see
:func:`add_arguments`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

Encode = Callable[[np.ndarray], np.ndarray]
"""``images [N, ...] -> mu [N, Z]``: the representation being measured."""

#: Pairs (Higgins) or samples (FactorVAE) behind one training point, L.
BATCH_SIZE = 64
#: Training points (Higgins), votes (FactorVAE) or labelled points (MIG, DCI).
NUM_TRAIN = 10_000
#: Evaluation points (Higgins), votes (FactorVAE) or test points (DCI).
NUM_EVAL = 5_000
#: Histogram bins per latent for the discrete mutual information (MIG, table).
MIG_BINS = 20
#: FactorVAE: latents whose standard deviation over the data is below this
#: are collapsed and take no part in the vote (``prune_dims.threshold``).
PRUNE_STD = 0.05
#: Higgins: inverse L2 strength of the logistic regression, per point
#: (scikit-learn's ``LogisticRegression(C=1.0)``, as disentanglement_lib uses).
HIGGINS_C = 1.0
#: DCI: L1 strength ``α`` of the per-factor Lasso on standardised latents and
#: factors (scikit-learn's objective ``1/(2n) ‖y − Xw‖² + α ‖w‖₁``). A latent
#: whose correlation with what the other latents leave unexplained is below α
#: gets weight 0: α is about the sampling noise of a correlation at 10,000
#: points (1/√n), far below the correlation of a latent that carries the factor.
DCI_ALPHA = 0.01
#: A latent is named after its best factor only when its normalised MI with
#: that factor exceeds that with the second-best factor by at least this much
#: (in units of each factor's entropy). A judgement call, not from a paper.
NAME_MIN_GAP = 0.1
#: Images rendered and encoded at once (bounds memory: rendering a 64×64
#: image takes about 80 kB of float64 temporaries).
ENCODE_CHUNK = 512


@dataclass(frozen=True)
class GroundTruth:
    """Data with known factors: ``sample(n, rng)`` -> factor classes
    ``[n, K]`` (int64, each column in ``range(sizes[k])``) and
    ``render(factors)`` -> the images an encoder takes."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    sample: Callable[[int, np.random.Generator], np.ndarray]
    render: Callable[[np.ndarray], np.ndarray]

    @property
    def num_factors(self) -> int:
        return len(self.names)


def uniform_sampler(sizes: Sequence[int]) -> Callable[[int, np.random.Generator], np.ndarray]:
    """Each factor drawn uniformly and independently: for a full factor grid
    such as dSprites this is the same as drawing an image uniformly."""
    high = np.asarray(sizes, dtype=np.int64)

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, high, size=(n, len(high)), dtype=np.int64)

    return sample


def dsprites_ground_truth(size: int = 64, channels: int = 1) -> GroundTruth:
    """The dSprites factor grid of :mod:`bvae_tools.dsprites` (5 factors:
    shape, scale, orientation, pos_x, pos_y), rendered at ``size`` × ``size``."""
    from . import dsprites

    return GroundTruth(
        names=dsprites.FACTOR_NAMES,
        sizes=dsprites.FACTOR_SIZES,
        sample=uniform_sampler(dsprites.FACTOR_SIZES),
        render=lambda f: dsprites.render(f, size, channels),
    )


def encode_factors(encode: Encode, truth: GroundTruth, factors: np.ndarray) -> np.ndarray:
    """Render and encode ``factors`` ``[n, K]`` in chunks -> ``mu`` ``[n, Z]`` (float64)."""
    parts = [
        np.asarray(encode(truth.render(factors[i : i + ENCODE_CHUNK])), dtype=np.float64)
        for i in range(0, len(factors), ENCODE_CHUNK)
    ]
    mus = np.concatenate(parts)
    if mus.ndim != 2 or len(mus) != len(factors):
        raise ValueError(f"encode must return [N, Z] for N = {len(factors)}, got {mus.shape}")
    return mus


def sample_codes(
    encode: Encode, truth: GroundTruth, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points drawn from ``truth``: (``mu`` ``[n, Z]``, factors ``[n, K]``)."""
    factors = truth.sample(n, rng)
    return encode_factors(encode, truth, factors), factors


def _check_counts(**counts: int) -> None:
    for name, v in counts.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


# ---------------------------------------------------------------------------
# A small multinomial logistic regression (numpy; no scikit-learn).


@dataclass(frozen=True)
class SoftmaxModel:
    """Multinomial logistic regression on standardised inputs:
    ``p(c | x) = softmax(((x - mean) / scale) @ weights + bias)``."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    classes: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        xs = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return self.classes[np.argmax(xs @ self.weights + self.bias, axis=1)]

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised ``x``, mean, scale); a column constant over the rows is
    set to 0 (its scale is 1, so applying mean and scale to new rows keeps
    them finite)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    used = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    scale = np.where(used, std, 1.0)
    return np.where(used, (x - mean) / scale, 0.0), mean, scale


def fit_softmax(
    x: np.ndarray, y: np.ndarray, l2: float = 0.0, max_iter: int = 2000, tol: float = 1e-5
) -> SoftmaxModel:
    """Fit a multinomial logistic regression of labels ``y`` ``[n]`` on
    ``x`` ``[n, D]``, minimising ``mean cross-entropy + l2/2 ‖W‖²`` (the bias
    is not penalised).

    Inputs are standardised with the training mean and standard deviation; an
    input that is constant on the training points gets weight 0. Solver:
    accelerated gradient descent (FISTA, Beck & Teboulle 2009) with adaptive
    restart, step ``1/L`` from Böhning's bound on the softmax Hessian,
    ``L = ½ λ_max(X̃ᵀX̃ / n) + l2``; it stops when no parameter moved by more
    than ``tol`` (relative) in a step, or after ``max_iter`` steps."""
    x = np.asarray(x, dtype=np.float64)
    classes, yi = np.unique(np.asarray(y), return_inverse=True)
    n, d = x.shape
    k = len(classes)
    xs, mean, scale = _standardise(x)
    bias = np.log(np.bincount(yi, minlength=k) / n)
    weights = np.zeros((d, k))
    if k < 2 or not xs.any():
        return SoftmaxModel(mean, scale, weights, bias, classes)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), yi] = 1.0
    aug = np.concatenate([xs, np.ones((n, 1))], axis=1)
    step = 1.0 / (0.5 * float(np.linalg.eigvalsh(aug.T @ aug / n)[-1]) + l2)
    w, b = weights, bias
    vw, vb, t = w, b, 1.0
    for _ in range(max_iter):
        resid = _softmax(xs @ vw + vb) - onehot
        w_new = vw - step * (xs.T @ resid / n + l2 * vw)
        b_new = vb - step * resid.mean(axis=0)
        moved = max(np.abs(w_new - w).max(), np.abs(b_new - b).max())
        size = max(1.0, np.abs(w_new).max(), np.abs(b_new).max())
        # adaptive restart (O'Donoghue & Candès 2015): drop momentum that points uphill
        if np.sum((vw - w_new) * (w_new - w)) + np.sum((vb - b_new) * (b_new - b)) > 0:
            t = 1.0
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        vw = w_new + ((t - 1.0) / t_new) * (w_new - w)
        vb = b_new + ((t - 1.0) / t_new) * (b_new - b)
        w, b, t = w_new, b_new, t_new
        if moved <= tol * size:
            break
    return SoftmaxModel(mean, scale, w, b, classes)


def lasso(
    x: np.ndarray, y: np.ndarray, alpha: float, max_iter: int = 1000, tol: float = 1e-7
) -> np.ndarray:
    """Weights ``w`` ``[D]`` minimising ``1/(2n) ‖y − x w‖² + alpha ‖w‖₁``
    (scikit-learn's Lasso objective, no intercept: centre ``x`` and ``y``
    first). Cyclic coordinate descent with soft thresholding (Friedman et al.
    2010); stops when no weight moved by more than ``tol`` in a sweep."""
    x = np.asarray(x, dtype=np.float64)
    resid = np.asarray(y, dtype=np.float64).copy()
    n, d = x.shape
    w = np.zeros(d)
    sq = (x**2).mean(axis=0)
    for _ in range(max_iter):
        moved = 0.0
        for j in np.flatnonzero(sq > 0):
            rho = float(x[:, j] @ resid) / n + sq[j] * w[j]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / sq[j]
            if new != w[j]:
                resid -= x[:, j] * (new - w[j])
                moved = max(moved, abs(new - w[j]))
                w[j] = new
        if moved <= tol:
            break
    return w


# ---------------------------------------------------------------------------
# Higgins et al. 2017


@dataclass(frozen=True)
class HigginsResult:
    """``score`` is the evaluation accuracy; chance is about ``1 / K``."""

    score: float
    train_accuracy: float
    batch_size: int
    num_train: int
    num_eval: int


def _higgins_points(
    encode: Encode, truth: GroundTruth, rng: np.random.Generator, n: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    per_chunk = max(1, ENCODE_CHUNK // (2 * batch_size))
    feats, labels = [], []
    for start in range(0, n, per_chunk):
        m = min(per_chunk, n - start)
        ks = rng.integers(0, truth.num_factors, size=m)
        f1 = truth.sample(m * batch_size, rng)
        f2 = truth.sample(m * batch_size, rng)
        rows = np.arange(m * batch_size)
        fixed = np.repeat(ks, batch_size)
        f2[rows, fixed] = f1[rows, fixed]
        z = encode_factors(encode, truth, np.concatenate([f1, f2]))
        diff = np.abs(z[: m * batch_size] - z[m * batch_size :])
        feats.append(diff.reshape(m, batch_size, -1).mean(axis=1))
        labels.append(ks)
    return np.concatenate(feats), np.concatenate(labels)


def higgins_metric(
    encode: Encode,
    truth: GroundTruth,
    rng: np.random.Generator,
    *,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
) -> HigginsResult:
    """The β-VAE disentanglement metric (Higgins et al. 2017, "β-VAE: Learning
    Basic Visual Concepts with a Constrained Variational Framework", §3).

    One training point: pick a factor ``k`` uniformly; draw ``L`` pairs of
    factor vectors that agree on factor ``k`` (all other factors drawn
    independently); render and encode both images of each pair (``mu``);
    the point is ``mean_l |mu(x₁ₗ) − mu(x₂ₗ)|`` with label ``k``. A
    low-capacity linear classifier learns ``k`` from ``num_train`` points;
    the score is its accuracy on ``num_eval`` fresh points.

    Defaults: ``L = 64``, 10,000 training and 5,000 evaluation points, as in
    disentanglement_lib (Locatello et al. 2019, ``beta_vae_sklearn.gin``).
    Higgins et al. report 99.23% for their β-VAE and 61.58% for a VAE on
    dSprites.

    The classifier is a multinomial logistic regression with scikit-learn's
    default L2 strength (``C = 1``: ``½‖W‖² + Σ`` cross-entropy), which
    disentanglement_lib uses; unlike it, the features are standardised first
    (the fit is the same affine classifier family; only the penalty's
    scale changes). Higgins et al. trained theirs with Adagrad."""
    _check_counts(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    x_train, y_train = _higgins_points(encode, truth, rng, num_train, batch_size)
    x_eval, y_eval = _higgins_points(encode, truth, rng, num_eval, batch_size)
    model = fit_softmax(x_train, y_train, l2=1.0 / (HIGGINS_C * num_train))
    return HigginsResult(
        score=model.accuracy(x_eval, y_eval),
        train_accuracy=model.accuracy(x_train, y_train),
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
    )


# ---------------------------------------------------------------------------
# Kim & Mnih 2018


@dataclass(frozen=True)
class FactorVAEResult:
    """``score`` is the evaluation accuracy of the majority-vote classifier;
    chance is about ``1 / K``. ``classifier[i]`` is the factor latent ``i``
    votes for (-1: pruned)."""

    score: float
    train_accuracy: float
    num_active: int
    classifier: list[int]
    batch_size: int
    num_train: int
    num_eval: int
    num_variance: int


def _factorvae_votes(
    encode: Encode,
    truth: GroundTruth,
    rng: np.random.Generator,
    n: int,
    batch_size: int,
    global_var: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """Votes ``[K, columns]``: one per point, (fixed factor, argmin latent)."""
    cols = int(active.sum()) or 1
    votes = np.zeros((truth.num_factors, cols), dtype=np.int64)
    per_chunk = max(1, ENCODE_CHUNK // batch_size)
    for start in range(0, n, per_chunk):
        m = min(per_chunk, n - start)
        ks = rng.integers(0, truth.num_factors, size=m)
        f = truth.sample(m * batch_size, rng).reshape(m, batch_size, -1)
        f[np.arange(m), :, ks] = f[np.arange(m), 0, ks][:, None]
        z = encode_factors(encode, truth, f.reshape(m * batch_size, -1))
        if not active.any():
            np.add.at(votes, (ks, np.zeros(m, dtype=np.int64)), 1)
            continue
        local = z.reshape(m, batch_size, -1)[:, :, active].var(axis=1, ddof=1)
        np.add.at(votes, (ks, np.argmin(local / global_var[active], axis=1)), 1)
    return votes


def factorvae_metric(
    encode: Encode,
    truth: GroundTruth,
    rng: np.random.Generator,
    *,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
    num_variance: int = NUM_TRAIN,
    prune_std: float = PRUNE_STD,
) -> FactorVAEResult:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018, "Disentangling
    by Factorising", §4).

    Scale each latent by its empirical standard deviation over the data
    (``num_variance`` points); latents whose standard deviation is below
    ``prune_std`` are collapsed and left out. One vote: pick a factor ``k``
    uniformly, draw ``L`` points that all share factor ``k`` (others free),
    encode them, and take the active latent ``d`` whose variance over the
    ``L`` points, divided by its variance over the data, is smallest; the
    vote is ``(d, k)``. The classifier maps each latent to the factor it got
    most training votes for (majority vote; a latent that got none maps to
    factor 0, as in disentanglement_lib); the score is its accuracy on
    ``num_eval`` fresh votes.

    Defaults as disentanglement_lib (Locatello et al. 2019,
    ``factor_vae_metric.gin``): ``L = 64``, 10,000 training and 5,000
    evaluation votes, variances from 10,000 points, pruning below a standard
    deviation of 0.05: the counts behind the published comparisons of
    Locatello et al.

    With no active latent at all, every vote falls into one "no latent"
    bucket and the majority vote names the most frequent factor: the score is
    chance (about ``1/K``). disentanglement_lib returns 0 in that case."""
    _check_counts(
        batch_size=batch_size, num_train=num_train, num_eval=num_eval, num_variance=num_variance
    )
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a variance), got {batch_size}")
    mus, _ = sample_codes(encode, truth, rng, max(2, num_variance))
    global_var = mus.var(axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_std
    train = _factorvae_votes(encode, truth, rng, num_train, batch_size, global_var, active)
    evals = _factorvae_votes(encode, truth, rng, num_eval, batch_size, global_var, active)
    vote = np.argmax(train, axis=0)
    cols = np.arange(train.shape[1])
    classifier = np.full(len(global_var), -1, dtype=np.int64)
    if active.any():
        classifier[active] = vote
    return FactorVAEResult(
        score=float(evals[vote, cols].sum() / evals.sum()),
        train_accuracy=float(train[vote, cols].sum() / train.sum()),
        num_active=int(active.sum()),
        classifier=classifier.tolist(),
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
        num_variance=num_variance,
    )


# ---------------------------------------------------------------------------
# Mutual information, MIG (Chen et al. 2018) and the per-latent table


def discretise(mus: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """Each column of ``mus`` ``[n, Z]`` -> bin indices of a ``bins``-bin
    histogram over its own range (disentanglement_lib's
    ``histogram_discretizer``). A constant column falls into one bin."""
    out = np.empty(mus.shape, dtype=np.int64)
    for i in range(mus.shape[1]):
        edges = np.histogram(mus[:, i], bins)[1]
        out[:, i] = np.digitize(mus[:, i], edges[:-1])
    return out


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two discrete label arrays, from their
    contingency table (``sklearn.metrics.mutual_info_score``)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    p = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb) / len(ai)
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(max(0.0, np.sum(p[nz] * np.log(p[nz] / outer[nz]))))


def entropy(a: np.ndarray) -> float:
    """Entropy (nats) of a discrete label array."""
    p = np.unique(a, return_counts=True)[1] / len(a)
    return float(-np.sum(p * np.log(p)))


def mutual_info_matrix(mus: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """``[Z, K]``: MI (nats) between each discretised latent and each factor."""
    codes = discretise(np.asarray(mus, dtype=np.float64), bins)
    return np.array(
        [[mutual_info(codes[:, i], factors[:, j]) for j in range(factors.shape[1])]
         for i in range(codes.shape[1])]
    )  # fmt: skip


@dataclass(frozen=True)
class MIGResult:
    """``score`` is the mean over factors of ``per_factor`` (0 when no latent
    stands out, 1 when each factor is entirely in one latent). ``mi`` is the
    ``[Z, K]`` matrix of mutual information (nats) and ``entropy`` each
    factor's entropy."""

    score: float
    per_factor: list[float | None]
    mi: list[list[float]]
    entropy: list[float]
    num_points: int
    bins: int


def mig_from_codes(mus: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> MIGResult:
    """MIG of latents ``mus`` ``[n, Z]`` against factor classes ``[n, K]``
    (see :func:`mig`). Factors that do not vary in the sample are left out
    of the mean; with one latent the gap is its MI (nothing to compete)."""
    mi = mutual_info_matrix(mus, factors, bins)
    h = np.array([entropy(factors[:, j]) for j in range(factors.shape[1])])
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    varying = h > 0
    if not varying.any():
        raise ValueError("no factor varies in the sample: MIG is undefined")
    gap = (top[0] - second) / np.where(varying, h, 1.0)
    return MIGResult(
        score=float(np.mean(gap[varying])),
        per_factor=[float(g) if v else None for g, v in zip(gap, varying, strict=True)],
        mi=mi.tolist(),
        entropy=h.tolist(),
        num_points=len(mus),
        bins=bins,
    )


def mig(
    encode: Encode,
    truth: GroundTruth,
    rng: np.random.Generator,
    *,
    num_points: int = NUM_TRAIN,
    bins: int = MIG_BINS,
) -> MIGResult:
    """The mutual information gap (Chen et al. 2018, "Isolating Sources of
    Disentanglement in Variational Autoencoders", §5):
    ``1/K Σ_k (I(z_a; v_k) − I(z_b; v_k)) / H(v_k)``, with ``z_a`` and
    ``z_b`` the latents of highest and second-highest mutual information
    with factor ``v_k``.

    Estimated as disentanglement_lib does (Locatello et al. 2019,
    ``mig.gin``): ``num_points = 10,000`` points; each latent's ``mu``
    discretised into a 20-bin histogram over its range; discrete mutual
    information and factor entropies from counts. Chen et al. estimated
    ``I(z; v)`` from the encoder's full posterior instead. With 20 bins, a
    factor of more than 20 values (orientation 40, positions 32 in dSprites)
    cannot reach a gap of 1 even when a latent copies it. The count-based
    estimate of MI is biased upwards by about ``(bins − 1)(values − 1) / 2n``
    nats (Miller 1955): 0.04 nats for orientation at 10,000 points, 0.37 at
    1,000, so fewer points blur the gaps."""
    _check_counts(num_points=num_points, bins=bins)
    mus, factors = sample_codes(encode, truth, rng, num_points)
    return mig_from_codes(mus, factors, bins)


@dataclass(frozen=True)
class LatentRow:
    """One latent's best factor by normalised MI (MI / factor entropy), that
    MI in nats and normalised, the runner-up factor and the gap between the
    two normalised MIs."""

    latent: int
    factor: str
    mi: float
    mi_normalised: float
    second: str
    second_normalised: float
    gap: float


def latent_table(
    mi: np.ndarray, entropies: Sequence[float], names: Sequence[str]
) -> list[LatentRow]:
    """Per latent (rows of ``mi`` ``[Z, K]``, nats): the factor of highest
    normalised MI (MI / H(factor), the normalisation of MIG, so that factors
    of different cardinality compare), and its gap to the runner-up."""
    mi = np.asarray(mi, dtype=np.float64)
    h = np.asarray(entropies, dtype=np.float64)
    norm = np.where(h > 0, mi / np.where(h > 0, h, 1.0), 0.0)
    rows = []
    for i, r in enumerate(norm):
        order = np.argsort(-r, kind="stable")
        best = int(order[0])
        second = int(order[1]) if len(order) > 1 else -1
        s = float(r[second]) if second >= 0 else 0.0
        rows.append(
            LatentRow(
                latent=i,
                factor=names[best],
                mi=float(mi[i, best]),
                mi_normalised=float(r[best]),
                second=names[second] if second >= 0 else "",
                second_normalised=s,
                gap=float(r[best]) - s,
            )
        )
    return rows


def name_latents(
    rows: Sequence[LatentRow], active: Sequence[bool], min_gap: float = NAME_MIN_GAP
) -> list[str]:
    """A name per latent: its best factor when the latent is active and the
    gap to the runner-up factor is at least ``min_gap`` (:data:`NAME_MIN_GAP`,
    in units of factor entropy); ``""`` otherwise. Names repeat when several
    latents carry the same factor."""
    if len(rows) != len(active):
        raise ValueError(f"{len(rows)} latents in the table, {len(active)} activity flags")
    return [r.factor if a and r.gap >= min_gap else "" for r, a in zip(rows, active, strict=True)]


# ---------------------------------------------------------------------------
# DCI (Eastwood & Williams 2018)


@dataclass(frozen=True)
class DCIResult:
    """DCI disentanglement (the score) and completeness, both in [0, 1];
    informativeness as Eastwood & Williams define it, the prediction error
    (NRMSE: RMSE of the standardised factor; 0 is perfect, 1 is no better
    than predicting the mean), averaged over factors. ``importance`` is ``R``
    ``[Z, K]``."""

    disentanglement: float
    completeness: float
    informativeness_error: float
    informativeness_error_train: float
    importance: list[list[float]]
    num_train: int
    num_test: int
    alpha: float

    @property
    def score(self) -> float:
        return self.disentanglement


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (log base ``base``) of each row of non-negative ``p``, after
    normalising the row (``scipy.stats.entropy(row + 1e-11, base=base)``)."""
    q = p + 1e-11
    q = q / q.sum(axis=1, keepdims=True)
    return -np.sum(q * np.log(q), axis=1) / np.log(base)


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix ``[Z, K]``:
    ``D = Σ_i ρ_i (1 − H_K(P_i·))`` with ``P_ij = R_ij / Σ_k R_ik`` and
    ``ρ_i = Σ_j R_ij / Σ_ij R_ij``; completeness is the same over factors,
    ``C = Σ_j ρ̃_j (1 − H_Z(P̃_·j))``. An all-zero matrix scores 0 on both
    (disentanglement_lib's convention)."""
    r = np.asarray(importance, dtype=np.float64)
    z, k = r.shape
    weights = r if r.sum() > 0 else np.ones_like(r)
    per_code = 1.0 - _entropy_rows(r, k) if k > 1 else np.ones(z)
    per_factor = 1.0 - _entropy_rows(r.T, z) if z > 1 else np.ones(k)
    if r.sum() == 0:
        per_code, per_factor = np.zeros(z), np.zeros(k)
    d = float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))
    c = float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))
    return d, c


def dci_from_codes(
    mus_train: np.ndarray,
    factors_train: np.ndarray,
    mus_test: np.ndarray,
    factors_test: np.ndarray,
    alpha: float = DCI_ALPHA,
) -> DCIResult:
    """DCI of latents against factors (see :func:`dci_disentanglement`)."""
    xs, mean, scale = _standardise(np.asarray(mus_train, dtype=np.float64))
    xt = (np.asarray(mus_test, dtype=np.float64) - mean) / scale  # constant latents: w = 0
    z, k = xs.shape[1], factors_train.shape[1]
    importance = np.zeros((z, k))
    err_train, err_test = [], []
    for j in range(k):
        y = np.asarray(factors_train[:, j], dtype=np.float64)
        y_mean, y_std = y.mean(), y.std()
        if y_std == 0:
            continue  # a factor that does not vary: nothing to predict
        w = lasso(xs, (y - y_mean) / y_std, alpha)
        importance[:, j] = np.abs(w)
        y_test = (np.asarray(factors_test[:, j], dtype=np.float64) - y_mean) / y_std
        err_train.append(float(np.sqrt(np.mean((xs @ w - (y - y_mean) / y_std) ** 2))))
        if np.var(y_test) > 0:
            err_test.append(float(np.sqrt(np.mean((xt @ w - y_test) ** 2) / np.var(y_test))))
    d, c = dci_scores(importance)
    return DCIResult(
        disentanglement=d,
        completeness=c,
        informativeness_error=float(np.mean(err_test)) if err_test else float("nan"),
        informativeness_error_train=float(np.mean(err_train)) if err_train else float("nan"),
        importance=importance.tolist(),
        num_train=len(mus_train),
        num_test=len(mus_test),
        alpha=alpha,
    )


def dci_disentanglement(
    encode: Encode,
    truth: GroundTruth,
    rng: np.random.Generator,
    *,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_EVAL,
    alpha: float = DCI_ALPHA,
) -> DCIResult:
    """DCI disentanglement (Eastwood & Williams 2018, "A Framework for the
    Quantitative Evaluation of Disentangled Representations", §3).

    For each factor ``j``, a regressor predicts ``v_j`` from the latents and
    gives the importance ``R_ij`` of each latent ``i``. With
    ``P_ij = R_ij / Σ_k R_ik`` (latent ``i``'s importance spread over the
    factors), disentanglement is ``Σ_i ρ_i (1 − H_K(P_i·))``, with
    ``ρ_i = Σ_j R_ij / Σ_ij R_ij`` the latent's relative importance and
    ``H_K`` the entropy in base ``K`` (number of factors). Completeness is
    the same with latents and factors swapped; informativeness is the
    regressors' prediction error on test points.

    The regressor is the paper's Lasso: latents standardised over the
    training points, each factor's class index standardised, ``α`` =
    :data:`DCI_ALPHA`, ``R_ij = |w_ij|``. Sample sizes as disentanglement_lib
    (Locatello et al. 2019, ``dci.gin``): 10,000 training and 5,000 test
    points. Locatello et al. use gradient-boosted trees instead (importance
    from the trees, informativeness as accuracy), so published DCI figures
    are close in kind but not interchangeable with these. A linear model sees
    only the linear part of a code: a latent that carries a factor in a
    non-monotone way (e.g. orientation folded by a sprite's symmetry, or
    unordered shapes) gets less importance here than trees would give it."""
    _check_counts(num_train=num_train, num_test=num_test)
    mus_train, f_train = sample_codes(encode, truth, rng, num_train)
    mus_test, f_test = sample_codes(encode, truth, rng, num_test)
    return dci_from_codes(mus_train, f_train, mus_test, f_test, alpha)


# ---------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="NAME.onnx exported by `export`, or a run directory of `train` (or its checkpoint.pt)",
    )
    p.add_argument(
        "--dsprites",
        action="store_true",
        help="ground truth: the built-in dSprites generator (the only one so far; required)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output directory [default: RUN_DIR/metrics, or NAME.metrics/ next to NAME.onnx]",
    )
    p.add_argument(
        "--points",
        type=int,
        default=NUM_TRAIN,
        help="training points of every metric (also FactorVAE's variance estimate and MIG's "
        "sample); evaluation points are half as many (Locatello et al. 2019: 10000 / 5000)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=BATCH_SIZE,
        help="L: pairs per Higgins point and samples per FactorVAE vote",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every sample drawn")
    p.add_argument(
        "--name-gap",
        type=float,
        default=NAME_MIN_GAP,
        help="name a latent after its best factor when its normalised MI beats the "
        "runner-up's by this much",
    )


EncodeBoth = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _onnx_encoder(path: Path, tmp: Path, threads: int) -> tuple[EncodeBoth, dict, tuple]:
    """(encode images -> (mu, logvar), metadata, (C, H, W)) of an exported model."""
    import onnx
    import onnxruntime as ort
    from google.protobuf.message import DecodeError

    from .bench import encoder_subgraph, image_shape

    try:
        meta = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        chw = image_shape(path)
        sub = encoder_subgraph(path, tmp / "encoder.onnx")
    except (DecodeError, onnx.checker.ValidationError, OSError, ValueError, IndexError) as e:
        raise UserError(
            f"{path} is not an encoder model exported by `export` (NAME.onnx: image -> mu, "
            f"logvar, recon; not NAME.decoder.onnx): {e}"
        ) from None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(sub), so, providers=["CPUExecutionProvider"])
    gain = None
    if meta.get("bvae.illumination") == "gain":
        gain = float(meta["bvae.illumination_mean"])

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if gain is not None:
            x = _normalise_gain(x, gain)
        mu, logvar = sess.run(["mu", "logvar"], {"image": x})
        return mu, logvar

    info = {"kind": "onnx", "dataset": meta.get("bvae.dataset", "")}
    return encode, info, chw


def _normalise_gain(x: np.ndarray, target: float) -> np.ndarray:
    import torch

    from .data import normalise_gain

    return normalise_gain(torch.from_numpy(x), target).numpy()


def _checkpoint_encoder(path: Path) -> tuple[EncodeBoth, dict, tuple, Path]:
    """Like :func:`_onnx_encoder` for a run directory or checkpoint."""
    import torch

    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .data import open_source

    ckpt = resolve_checkpoint(path)
    model, cfg, _ = load_checkpoint(ckpt)
    gain = None
    if cfg.data.illumination == "gain":
        src = open_source(cfg.data, cfg.model.size, cfg.model.channels, ckpt.parent)
        gain = float(src.target)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if gain is not None:
            x = _normalise_gain(x, gain)
        with torch.no_grad():
            mu, logvar = model.encode(torch.from_numpy(x))
        return mu.numpy(), logvar.numpy()

    chw = (cfg.model.channels, cfg.model.size, cfg.model.size)
    return encode, {"kind": "checkpoint", "dataset": cfg.data.describe()}, chw, ckpt.parent


def _plot(results: dict, rows: list[LatentRow], names: list[str], kl: np.ndarray, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import ACTIVE_KL

    factor_names = results["factors"]
    m = results["metrics"]
    labels = ["Higgins", "FactorVAE", "MIG", "DCI D", "DCI C", "DCI 1−err"]
    values = [
        m["higgins"]["score"],
        m["factorvae"]["score"],
        m["mig"]["score"],
        m["dci"]["disentanglement"],
        m["dci"]["completeness"],
        max(0.0, 1.0 - m["dci"]["informativeness_error"]),
    ]
    colours = ["tab:blue"] * 4 + ["lightsteelblue"] * 2
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), width_ratios=[1, 1.3])
    bars = ax.bar(labels, values, color=colours)
    ax.bar_label(bars, fmt="%.2f")
    chance = 1.0 / len(factor_names)
    ax.axhline(chance, ls="--", c="gray", lw=1)
    ax.text(0.5, chance + 0.02, "chance", ha="center", fontsize=7, c="gray")
    ax.set_ylim(0, 1.1)
    ax.set_title(f"disentanglement on {results['ground_truth']} ({results['points']} points)")
    ax.grid(axis="y", alpha=0.3)
    cmap = plt.get_cmap("tab10")
    z = len(rows)
    heights = [r.mi_normalised for r in rows]
    cols = [
        cmap(factor_names.index(r.factor)) if kl[r.latent] >= ACTIVE_KL else "lightgray"
        for r in rows
    ]
    bars = ax2.bar(range(z), heights, color=cols)
    ax2.bar_label(bars, labels=[n or "" for n in names], fontsize=7, rotation=90, padding=2)
    ax2.set_xticks(range(z))
    ax2.set_xlabel(f"latent (gray: inactive, KL < {ACTIVE_KL:g} nats)")
    ax2.set_ylabel("MI / H(factor), best factor")
    ax2.set_ylim(0, 1.25)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(factor_names))]
    ax2.legend(handles, factor_names, fontsize=7, ncols=len(factor_names), loc="upper center")
    ax2.set_title("each latent's best factor (name shown when the gap is clear)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_table(rows: Sequence[LatentRow], names: Sequence[str], kl: Sequence[float]) -> str:
    """The per-latent table as text, one line per latent."""
    head = (
        f"{'latent':>6}  {'KL':>7}  {'name':<12} {'best factor':<12} {'MI':>6} "
        f"{'MI/H':>6}  {'second':<12} {'MI/H':>6}  {'gap':>6}"
    )
    lines = [head]
    for r, n, k in zip(rows, names, kl, strict=True):
        lines.append(
            f"{r.latent:>6}  {k:>7.3f}  {n or '-':<12} {r.factor:<12} {r.mi:>6.3f} "
            f"{r.mi_normalised:>6.3f}  {r.second or '-':<12} {r.second_normalised:>6.3f}  "
            f"{r.gap:>6.3f}"
        )
    return "\n".join(lines)


def measure(
    encode_both: EncodeBoth,
    truth: GroundTruth,
    points: int,
    batch: int,
    seed: int,
    label: str = "dsprites",
) -> tuple[dict, np.ndarray, list[LatentRow]]:
    """All four metrics with ``points`` training and ``points // 2``
    evaluation points, each metric on its own random stream of ``seed``. MIG,
    the per-latent table, the mean KL per latent and DCI's training set share
    one sample of ``points`` points. Returns (JSON-ready results, mean KL per
    latent over that sample, the per-latent table)."""
    num_eval = max(1, points // 2)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]

    def encode(x: np.ndarray) -> np.ndarray:
        return encode_both(x)[0]

    seconds = {}
    t = time.perf_counter()
    higgins = higgins_metric(
        encode, truth, rngs[0], batch_size=batch, num_train=points, num_eval=num_eval
    )
    seconds["higgins"] = time.perf_counter() - t
    print(f"Higgins et al. 2017: {higgins.score:.3f} ({seconds['higgins']:.0f} s)", flush=True)
    t = time.perf_counter()
    fvae = factorvae_metric(
        encode,
        truth,
        rngs[1],
        batch_size=batch,
        num_train=points,
        num_eval=num_eval,
        num_variance=points,
    )
    seconds["factorvae"] = time.perf_counter() - t
    print(f"FactorVAE: {fvae.score:.3f} ({seconds['factorvae']:.0f} s)", flush=True)
    t = time.perf_counter()
    factors = truth.sample(points, rngs[2])
    mus, logvars = [], []
    for i in range(0, points, ENCODE_CHUNK):
        mu, lv = encode_both(truth.render(factors[i : i + ENCODE_CHUNK]))
        mus.append(np.asarray(mu, dtype=np.float64))
        logvars.append(np.asarray(lv, dtype=np.float64))
    mu, lv = np.concatenate(mus), np.concatenate(logvars)
    kl = 0.5 * (mu**2 + np.exp(lv) - lv - 1.0).mean(axis=0)
    mig_res = mig_from_codes(mu, factors)
    seconds["mig"] = time.perf_counter() - t
    print(f"MIG: {mig_res.score:.3f} ({seconds['mig']:.0f} s)", flush=True)
    t = time.perf_counter()
    mu_test, f_test = sample_codes(encode, truth, rngs[3], num_eval)
    dci = dci_from_codes(mu, factors, mu_test, f_test)
    seconds["dci"] = time.perf_counter() - t
    print(f"DCI disentanglement: {dci.disentanglement:.3f} ({seconds['dci']:.0f} s)", flush=True)
    rows = latent_table(np.array(mig_res.mi), mig_res.entropy, truth.names)
    return (
        {
            "ground_truth": label,
            "factors": list(truth.names),
            "factor_sizes": list(truth.sizes),
            "seed": seed,
            "points": points,
            "eval_points": num_eval,
            "batch": batch,
            "metrics": {
                "higgins": asdict(higgins),
                "factorvae": asdict(fvae),
                "mig": asdict(mig_res),
                "dci": {**asdict(dci), "score": dci.score},
            },
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        },
        kl,
        rows,
    )


def run(args: argparse.Namespace) -> int:
    from .report import ACTIVE_KL

    if not args.dsprites:
        raise UserError(
            "metrics needs ground-truth factors; pass --dsprites (the built-in dSprites "
            "generator, the only ground truth supported so far)"
        )
    if args.points < 2:
        raise UserError(f"--points must be at least 2, got {args.points}")
    if args.batch < 2:
        raise UserError(
            f"--batch must be at least 2 (FactorVAE takes a variance), got {args.batch}"
        )
    path = Path(args.model)
    threads = getattr(args, "threads", 0)
    with tempfile.TemporaryDirectory() as tmp:
        if path.suffix == ".onnx":
            if not path.is_file():
                raise UserError(f"model {path} does not exist; pass NAME.onnx made by `export`")
            encode_both, info, chw = _onnx_encoder(path, Path(tmp), threads)
            out = Path(args.out) if args.out else path.with_name(path.stem + ".metrics")
        else:
            encode_both, info, chw, run_dir = _checkpoint_encoder(path)
            out = Path(args.out) if args.out else run_dir / "metrics"
        c, h, w = chw
        if h != w or c not in (1, 3):
            raise UserError(
                f"{path} takes {c}×{h}×{w} images; dSprites is square, gray or RGB: "
                "the model must take 1×S×S or 3×S×S"
            )
        if info["dataset"] != "dsprites":
            print(
                f"note: {path} was trained on {info['dataset'] or 'unknown data'}, not dSprites; "
                "its latents may mean little there"
            )
        truth = dsprites_ground_truth(h, c)
        out.mkdir(parents=True, exist_ok=True)
        if args.points < NUM_TRAIN:
            print(
                f"note: --points {args.points} is below the protocol's {NUM_TRAIN}: the scores "
                "are noisier, and the mutual information behind MIG and the latent names is "
                "overestimated more (see `mig`)"
            )
        results, kl, rows = measure(encode_both, truth, args.points, args.batch, args.seed)
    results.update(model=str(path), **info)
    active = [bool(k >= ACTIVE_KL) for k in kl]
    names = name_latents(rows, active, args.name_gap)
    results["latents"] = [
        {**asdict(r), "kl": float(kl[r.latent]), "active": a, "name": n}
        for r, a, n in zip(rows, active, names, strict=True)
    ]
    results["latent_names"] = names
    results["name_min_gap"] = args.name_gap
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, rows, names, kl, out / "metrics.png")
    m = results["metrics"]
    print(
        f"Higgins {m['higgins']['score']:.3f}  FactorVAE {m['factorvae']['score']:.3f}  "
        f"MIG {m['mig']['score']:.3f}  DCI disentanglement {m['dci']['disentanglement']:.3f} "
        f"(completeness {m['dci']['completeness']:.3f}, "
        f"informativeness error {m['dci']['informativeness_error']:.3f})"
    )
    print(format_table(rows, names, kl))
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics.png'}")
    return 0
