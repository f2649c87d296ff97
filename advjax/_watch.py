"""`PGDWatch`: each member's PGD accuracy on fixed training images after every epoch."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from advjax import evaluation
from advjax._types import Array
from advjax._types import Params
from advjax.models import Classifier


@dataclasses.dataclass(frozen=True)
class PGDWatch:
  """Watches for catastrophic overfitting: PGD accuracy on fixed training images each epoch.

  Single-step adversarial training (FGSM, even from a random start with too
  large a step) can collapse within an epoch: PGD accuracy falls to about 0%
  while FGSM accuracy stays high (Wong et al. 2020). Passed to `advjax.loop.fit`
  or `fit_members` as ``watch=``, this scores every member after each epoch with
  `advjax.evaluation.pgd_error` (one random start from ``seed``'s key, the
  same every epoch) on ``(x, y)``, one compiled call for the population;
  ~500-1000 training images suffice. Each member then:

  - records ``watch_pgd_accuracy`` in its history and ``metrics.jsonl``;
  - keeps the parameters of its epoch with the highest watched accuracy (the
    earliest on a tie) as its result, instead of its last or its best
    validation epoch; validation early stopping (``config.patience``) still
    decides when the member stops, and ``FitResult.best_epoch`` stays the
    validation's;
  - reports ``collapse_epoch``: the first epoch whose accuracy fell below
    ``drop`` times the best of the epochs before it and below ``floor``.

  Attributes:
    x: training inputs to attack, shape ``(n, features)``.
    y: their labels.
    eps: radius of the attack's L-infinity ball.
    step: size of each sign step.
    num_steps: PGD steps.
    clip: the ``(lo, hi)`` box of the inputs.
    floor: a collapse needs an accuracy below this.
    drop: ... and below this fraction of the best accuracy before it.
    seed: seeds the random start.

  Example:
    >>> watch = PGDWatch(data.train.x[:50], data.train.y[:50], eps=0.1, step=0.05, num_steps=3)
    >>> watch.accuracies(model, stacked).shape  # one per member
    (3,)
    >>> watch.collapsed([0.9, 0.8, 0.1]), watch.collapsed([0.9, 0.8, 0.7])
    (True, False)
  """

  x: Any
  y: Any
  eps: float
  step: float
  num_steps: int
  clip: tuple[float, float] = (0.0, 1.0)
  floor: float = 0.2
  drop: float = 0.5
  seed: int = 0

  def __post_init__(self) -> None:
    if np.shape(self.x)[0] != np.shape(self.y)[0] or np.shape(self.y)[0] < 1:
      raise ValueError(
          f"watch x and y must hold the same number (>= 1) of examples, got shapes "
          f"{np.shape(self.x)} and {np.shape(self.y)}."
      )
    if not isinstance(self.num_steps, int) or self.num_steps < 1:
      raise ValueError(f"num_steps must be an int >= 1, got {self.num_steps!r}.")
    if not 0 <= self.floor <= 1 or not 0 <= self.drop <= 1:
      raise ValueError(f"floor and drop must lie in [0, 1], got {self.floor!r} and {self.drop!r}.")

  def accuracies(self, model: Classifier, params: Params) -> np.ndarray:
    """Each member's PGD accuracy on the watched images, shape ``(members,)``."""
    errors = _watch_errors(
        model,
        params,
        jnp.asarray(self.x),
        jnp.asarray(self.y),
        self.eps,
        self.step,
        jax.random.key(self.seed),
        num_steps=self.num_steps,
        clip=tuple(self.clip),
    )
    return 1 - np.asarray(errors)

  def collapsed(self, history: Sequence[float]) -> bool:
    """Whether the last of ``history``'s accuracies is a collapse from the ones before."""
    *before, last = history
    return bool(before) and last < self.floor and last < self.drop * max(before)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "clip"))
def _watch_errors(
    model: Classifier,
    params: Params,
    x: Array,
    y: Array,
    eps: Any,
    step: Any,
    key: Array,
    *,
    num_steps: int,
    clip: tuple[float, float],
) -> Array:
  """`advjax.evaluation.pgd_error` of every member, as one program."""
  error = lambda p: evaluation.pgd_error(
      model,
      p,
      x,
      y,
      eps,
      step_size=step,
      num_steps=num_steps,
      restarts=1,
      key=key,
      clip=clip,
      batch_size=x.shape[0],
  )
  return jax.vmap(error)(params)


def record(
    watch: PGDWatch, info: dict[str, Any], epoch: int, accuracy: float, row: dict[str, Any]
) -> bool:
  """Records a member's watched accuracy; whether this epoch is its best so far (to keep)."""
  history = watched(info["history"]) + [accuracy]
  row["watch_pgd_accuracy"] = accuracy
  if info.get("collapse_epoch") is None and watch.collapsed(history):
    info["collapse_epoch"] = epoch
    row["watch_collapse"] = True
  return accuracy > max(history[:-1], default=-1.0)


def watched(history: list[dict[str, Any]]) -> list[float]:
  """The watched PGD accuracies of a member's history, epoch by epoch."""
  return [row["watch_pgd_accuracy"] for row in history if "watch_pgd_accuracy" in row]
