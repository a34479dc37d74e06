"""The statistics of `mixtral eval`, computed as llama-perplexity's ``--kl-divergence`` computes them
(tools/perplexity/perplexity.cpp: kl_divergence, log_softmax, mean_and_uncertainty, percentile), so that its
numbers and published tables compare with ours.

Per scored position only what the statistics need is kept: sums for the means and two floats (its KL
divergence and its Δp) for the percentiles. The logits themselves live for one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

BYTES_PER_POSITION = 8  # one float32 KL divergence and one float32 Δp, for the percentiles
_ROWS_AT_ONCE = 64  # positions whose float64 log-probabilities are in memory at once


@dataclass(frozen=True)
class Estimate:
    """A mean and its standard error, as llama-perplexity prints them (``value ± error``)."""

    value: float
    error: float


@dataclass(frozen=True)
class LossSummary:
    """The numbers of llama-perplexity's ``--kl-divergence`` report; Δp and same-top as fractions (0..1)."""

    positions: int
    ppl: Estimate  # the model's
    ppl_reference: Estimate
    ppl_ratio: Estimate  # PPL(model)/PPL(reference)
    ln_ppl_ratio: Estimate
    ppl_correlation: float  # of ln PPL(model) and ln PPL(reference) over positions
    kld: Estimate
    kld_median: float
    kld_p99: float
    kld_p999: float
    kld_max: float
    same_top: Estimate  # positions where both models' likeliest token is the same
    p_diff: Estimate  # mean Δp: p(model) - p(reference) of the text's next token
    p_diff_rms: Estimate
    p_diff_p1: float  # the 1st percentile of Δp: the worst drops
    p_diff_max: float


def _mean_and_error(total: float, total2: float, count: int) -> Estimate:
    if count < 1:
        return Estimate(0.0, 0.0)
    mean = total / count
    variance = total2 / count - mean * mean
    return Estimate(mean, math.sqrt(variance / (count - 1)) if variance > 0 and count > 10 else 0.0)


def _covariance(total_a: float, total_b: float, total_ab: float, count: int) -> float:
    if count < 10:
        return 0.0
    return (total_ab / count - (total_a / count) * (total_b / count)) / (count - 1)


def percentile(ordered: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile: linear between the two nearest of the sorted values."""
    if fraction <= 0:
        return float(ordered[0])
    if fraction >= 1:
        return float(ordered[-1])
    place = fraction * (len(ordered) - 1)
    low = int(place)
    high = min(low + 1, len(ordered) - 1)
    return float((1 - (place - low)) * ordered[low] + (place - low) * ordered[high])


def median(ordered: np.ndarray) -> float:
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else float(0.5 * (ordered[middle] + ordered[middle - 1]))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    rows = logits.astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return rows


@dataclass
class LossTally:
    """The running sums over every position scored so far, and each position's KLD and Δp."""

    count: int = 0
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_ref: float = 0.0
    sum_nll_ref2: float = 0.0
    sum_nll_nll_ref: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    n_same_top: int = 0
    _kld: list[np.ndarray] = field(default_factory=list)
    _p_diff: list[np.ndarray] = field(default_factory=list)

    def add(self, reference: np.ndarray, model: np.ndarray, targets: np.ndarray) -> None:
        """Positions whose logits are ``reference`` and ``model`` (rows alike), each followed by ``targets``."""
        for start in range(0, len(targets), _ROWS_AT_ONCE):
            rows = slice(start, start + _ROWS_AT_ONCE)
            self._add_rows(reference[rows], model[rows], targets[rows])

    def _add_rows(self, reference: np.ndarray, model: np.ndarray, targets: np.ndarray) -> None:
        import numpy as np

        ref_lp, model_lp = _log_softmax(reference), _log_softmax(model)
        picked = np.arange(len(targets)), targets
        nll, nll_ref = -model_lp[picked], -ref_lp[picked]
        kld = (np.exp(ref_lp) * (ref_lp - model_lp)).sum(axis=1)
        p_diff = np.exp(-nll) - np.exp(-nll_ref)
        self.count += len(targets)
        self.sum_nll += float(nll.sum())
        self.sum_nll2 += float((nll * nll).sum())
        self.sum_nll_ref += float(nll_ref.sum())
        self.sum_nll_ref2 += float((nll_ref * nll_ref).sum())
        self.sum_nll_nll_ref += float((nll * nll_ref).sum())
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        self.sum_p_diff += float(p_diff.sum())
        self.sum_p_diff2 += float((p_diff * p_diff).sum())
        self.sum_p_diff4 += float((p_diff**4).sum())
        self.n_same_top += int((reference.argmax(axis=1) == model.argmax(axis=1)).sum())
        self._kld.append(kld.astype(np.float32))
        self._p_diff.append(p_diff.astype(np.float32))

    def summary(self) -> LossSummary | None:
        """The report so far; None before any position was scored."""
        import numpy as np

        count = self.count
        if not count:
            return None
        log_ppl = _mean_and_error(self.sum_nll, self.sum_nll2, count)
        log_ppl_ref = _mean_and_error(self.sum_nll_ref, self.sum_nll_ref2, count)
        cov = _covariance(self.sum_nll, self.sum_nll_ref, self.sum_nll_nll_ref, count)
        ln_ratio = Estimate(
            log_ppl.value - log_ppl_ref.value,
            math.sqrt(max(0.0, log_ppl.error**2 + log_ppl_ref.error**2 - 2 * cov)),
        )
        errors = log_ppl.error * log_ppl_ref.error
        p_diff_mse = _mean_and_error(self.sum_p_diff2, self.sum_p_diff4, count)
        rms = math.sqrt(p_diff_mse.value)
        same_top = self.n_same_top / count
        kld = np.sort(np.concatenate(self._kld))
        p_diff = np.sort(np.concatenate(self._p_diff))
        return LossSummary(
            positions=count,
            ppl=_exp(log_ppl),
            ppl_reference=_exp(log_ppl_ref),
            ppl_ratio=_exp(ln_ratio),
            ln_ppl_ratio=ln_ratio,
            ppl_correlation=cov / errors if errors else 1.0,
            kld=_mean_and_error(self.sum_kld, self.sum_kld2, count),
            kld_median=median(kld),
            kld_p99=percentile(kld, 0.99),
            kld_p999=percentile(kld, 0.999),
            kld_max=float(kld[-1]),
            same_top=Estimate(same_top, math.sqrt(same_top * (1 - same_top) / (count - 1)) if count > 1 else 0.0),
            p_diff=_mean_and_error(self.sum_p_diff, self.sum_p_diff2, count),
            p_diff_rms=Estimate(rms, 0.5 / rms * p_diff_mse.error if rms else 0.0),
            p_diff_p1=percentile(p_diff, 0.01),
            p_diff_max=float(p_diff[-1]),
        )


def _exp(log: Estimate) -> Estimate:
    value = math.exp(log.value)
    return Estimate(value, value * log.error)


@dataclass(frozen=True)
class LayerRouting:
    """How often, in one layer, the model's router chose as the reference's did."""

    layer: int
    same_set: float  # the same experts (as a set)
    same_first: float  # the same expert ranked first


@dataclass(frozen=True)
class RoutingSummary:
    positions: int
    experts_used: int
    layers: tuple[LayerRouting, ...]  # in layer order

    @property
    def most_divergent(self) -> LayerRouting:
        return min(self.layers, key=lambda layer: (layer.same_set, layer.same_first, layer.layer))

    @property
    def same_set(self) -> float:
        """Over every layer."""
        return sum(layer.same_set for layer in self.layers) / len(self.layers)

    @property
    def same_first(self) -> float:
        return sum(layer.same_first for layer in self.layers) / len(self.layers)


@dataclass
class RoutingTally:
    """Per layer, the positions where both routers chose the same experts, and the same first one."""

    count: int = 0
    experts_used: int = 0
    _same_set: np.ndarray | None = None
    _same_first: np.ndarray | None = None

    def add(self, reference: np.ndarray, model: np.ndarray) -> None:
        """Both routers' choices at the same positions, as (layer, position, rank) arrays, best first."""
        import numpy as np

        same_set = (np.sort(reference, axis=2) == np.sort(model, axis=2)).all(axis=2).sum(axis=1)
        same_first = (reference[:, :, 0] == model[:, :, 0]).sum(axis=1)
        if self._same_set is None or self._same_first is None:
            self._same_set, self._same_first = same_set, same_first
            self.experts_used = reference.shape[2]
        else:
            self._same_set += same_set
            self._same_first += same_first
        self.count += reference.shape[1]

    def summary(self) -> RoutingSummary | None:
        if not self.count or self._same_set is None or self._same_first is None:
            return None
        layers = tuple(
            LayerRouting(layer, int(same) / self.count, int(first) / self.count)
            for layer, (same, first) in enumerate(zip(self._same_set, self._same_first, strict=True))
        )
        return RoutingSummary(positions=self.count, experts_used=self.experts_used, layers=layers)
