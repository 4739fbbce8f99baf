"""Training-health monitors for the GAN pathologies the write-ups describe.

Toutouh lists non-convergence, mode collapse and diminished gradients; Bordon et al.
watched D's loss on fakes to catch failure early. The monitor looks at the
logged scalars (and, for diversity, a batch of samples) over a window of steps
and emits :class:`HealthWarning` records, which the loop logs, writes to
TensorBoard under ``health/`` and, for signals listed in ``train.stop_on``,
turns into a clean stop. Thresholds live in ``HealthConfig``; their defaults
stay quiet on a healthy debug run.

Signals:
- ``d_win``: how real D finds the fakes, averaged over the window, below
  ``health.d_fake_min`` (D wins; Bordon et al.: "if this number is close to 0 the
  generator will not improve"). The quantity is the ``realness`` score of the
  ``train.loss`` entry (:mod:`distgan.losses`), always in [0, 1]: e.g. the mean D(G(z))
  as a probability for ``bce`` (``d_fake``); for ``hinge``, whose D outputs no
  probability, the share of fakes D has not yet pushed past its margin (D(G(z)) > -1,
  ``d_fake_in_margin``). So the default 0.02 reads "D takes the fakes for real 2% or
  less", in the loss's own terms.
- ``vanishing_grad``: G's gradient norm below ``health.grad_g_min``, or below
  ``health.grad_g_drop`` x its first-window level (collapsing).
- ``mode_collapse``: mean pairwise distance of generated samples (per class for
  conditional models) below ``health.diversity_ratio`` x that of the real batch.
- ``oscillation``: loss_g's std/mean over the window above ``health.oscillation``
  while the main metric (when evaluated) did not improve.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from distgan.config import HealthConfig
from distgan.losses import adversarial

SIGNALS = ("d_win", "vanishing_grad", "mode_collapse", "oscillation")


@dataclass
class HealthWarning:
    step: int
    signal: str
    value: float
    threshold: float
    detail: str

    def message(self) -> str:
        return (f"health warning at step {self.step}: {self.signal} "
                f"({self.detail}: {self.value:.4g}, threshold {self.threshold:.4g})")


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance over all ordered pairs of distinct rows of ``x`` (N, D)."""
    n = x.shape[0]
    if n < 2:
        return float("nan")
    d = torch.cdist(x.double(), x.double())
    return float(d.sum() / (n * (n - 1)))


def batch_diversity(images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Pixel-space diversity of a batch; per class (then averaged) when labels are given."""
    flat = images.detach().float().flatten(1)
    if labels is None or labels.dtype.is_floating_point:
        return mean_pairwise_distance(flat)
    vals = [mean_pairwise_distance(flat[labels == c]) for c in labels.unique() if int((labels == c).sum()) >= 2]
    return float(sum(vals) / len(vals)) if vals else float("nan")


class HealthMonitor:
    """Feed it logged scalars (``observe``) and sample batches (``check_diversity``).

    ``loss`` is ``train.loss``: its entry names the logged score ``d_win`` reads.
    """

    def __init__(self, hc: HealthConfig, stop_on: list[str] | None = None, loss: str = "bce"):
        unknown = [s for s in stop_on or [] if s not in SIGNALS]
        if unknown:
            raise ValueError(f"train.stop_on: unknown health signal(s) {unknown}; available: {', '.join(SIGNALS)}")
        self.hc = hc
        self.stop_on = set(stop_on or [])
        self.realness = adversarial(loss).realness  # the logged score: how real D finds the fakes
        self.records: deque[tuple[int, dict[str, float]]] = deque()
        self.first_grad: float | None = None
        self.last_warned: dict[str, int] = {}
        self.best_metric: float | None = None
        self.metric_improved_at = 0
        self.values: dict[str, float] = {}  # latest value of each signal, for TensorBoard

    # ------------------------------------------------------------------ checkpoint part
    def state_dict(self) -> dict[str, Any]:
        """The window of log records and what the signals remember (plain data): a resumed run
        judges its first steps as an uninterrupted run would, instead of waiting for a new window."""
        return {"records": [[step, dict(values)] for step, values in self.records], "first_grad": self.first_grad,
                "last_warned": dict(self.last_warned), "best_metric": self.best_metric,
                "metric_improved_at": self.metric_improved_at, "values": dict(self.values)}

    def load_state_dict(self, state: dict[str, Any], ctx: Any = None) -> None:
        """Continue from :meth:`state_dict` (``ctx``, the resume context, changes nothing here: every
        rank observes the same averaged values whatever the world size)."""
        self.records = deque((int(step), dict(values)) for step, values in state["records"])
        self.first_grad, self.best_metric = state["first_grad"], state["best_metric"]
        self.last_warned = {str(k): int(v) for k, v in state["last_warned"].items()}
        self.metric_improved_at, self.values = int(state["metric_improved_at"]), dict(state["values"])

    # ------------------------------------------------------------------ scalars
    def observe(self, step: int, values: dict[str, float]) -> list[HealthWarning]:
        """Add one log record; return the warnings that fire at this step."""
        # only what the signals read: the window is checkpointed, and timings would make it differ run to run
        self.records.append((step, {k: values[k] for k in (self.realness, "grad_norm_g", "loss_g") if k in values}))
        while self.records and self.records[0][0] <= step - self.hc.window:
            self.records.popleft()
        if step < self.hc.window or len(self.records) < 3:
            return []  # judge only full windows
        out = []
        realness = self._mean(self.realness)
        if realness is not None:
            self.values[self.realness] = realness
            if realness < self.hc.d_fake_min:
                out += self._warn(step, "d_win", realness, self.hc.d_fake_min, f"mean {self.realness} over window")
        grad = self._mean("grad_norm_g")
        if grad is not None:
            if self.first_grad is None:
                self.first_grad = grad
            self.values["grad_norm_g"] = grad
            drop_floor = self.hc.grad_g_drop * self.first_grad
            if grad < self.hc.grad_g_min or grad < drop_floor:
                floor = max(self.hc.grad_g_min, drop_floor)
                out += self._warn(step, "vanishing_grad", grad, floor, "mean G grad norm over window")
        losses = [v["loss_g"] for _, v in self.records if "loss_g" in v]
        if len(losses) >= 3:
            t = torch.tensor(losses, dtype=torch.float64)
            cv = float(t.std() / t.mean().abs().clamp_min(1e-8))
            self.values["loss_g_cv"] = cv
            stalled = self.best_metric is None or step - self.metric_improved_at >= self.hc.window
            if cv > self.hc.oscillation and stalled:
                out += self._warn(step, "oscillation", cv, self.hc.oscillation, "std/mean of loss_g over window")
        return out

    def observe_metric(self, step: int, value: float, lower_is_better: bool = True) -> None:
        """Tell the monitor about the main metric, so oscillation can check for progress."""
        better = self.best_metric is None or (value < self.best_metric if lower_is_better else value > self.best_metric)
        if better:
            self.best_metric, self.metric_improved_at = value, step

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def check_diversity(self, step: int, G: torch.nn.Module, real: torch.Tensor,
                        labels: torch.Tensor | None, z: torch.Tensor) -> list[HealthWarning]:
        """Compare the diversity of G(z, labels) with that of the real batch (same labels).

        Judged only from the first full window on: an untrained G's first outputs are
        near-constant blobs, which is not mode collapse.
        """
        if step < self.hc.window:
            return []
        was_training = G.training
        G.eval()
        fake = G(z, labels)
        G.train(was_training)
        real_div = batch_diversity(real, labels)
        fake_div = batch_diversity(fake, labels)
        if not (real_div > 0):
            return []
        ratio = fake_div / real_div
        self.values["diversity_ratio"] = ratio
        if ratio < self.hc.diversity_ratio:
            return self._warn(step, "mode_collapse", ratio, self.hc.diversity_ratio,
                              "fake/real batch diversity" + (" (per class)" if labels is not None else ""))
        return []

    # ------------------------------------------------------------------ helpers
    def _mean(self, key: str) -> float | None:
        vals = [v[key] for _, v in self.records if key in v and v[key] == v[key]]
        return sum(vals) / len(vals) if vals else None

    def _warn(self, step: int, signal: str, value: float, threshold: float, detail: str) -> list[HealthWarning]:
        last = self.last_warned.get(signal)
        if last is not None and step - last < self.hc.window:
            return []  # one warning per signal per window, not one per log line
        self.last_warned[signal] = step
        return [HealthWarning(step, signal, float(value), float(threshold), detail)]

    def should_stop(self, warnings: list[HealthWarning]) -> HealthWarning | None:
        """The first warning whose signal is in ``train.stop_on``, if any."""
        return next((w for w in warnings if w.signal in self.stop_on), None)
