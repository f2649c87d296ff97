"""What the epoch items (8 to 11) share: populations, the per-step loop, checks and notes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from advjax import models
from advjax import train
from benchmarks import base
from benchmarks import harness

# The compiled epoch and the per-step loop run the same unbatched step, and
# agree when no parameter differs by more than this fraction of the largest.
PARAM_TOLERANCE = 1e-4
# Vmapped members run batched products, whose rounding differs from one
# member's; once it flips the sign of an FGSM pixel at a near-tie, the two
# runs drift apart (by a few 1e-3 of the largest parameter over 100 steps,
# as much as two members eps 0.05 apart). A vmapped member agrees with its
# run alone when its summed loss is at least this many times closer to that
# run's than to any other member's run alone.
IDENTIFICATION_MARGIN = 10


@dataclasses.dataclass(frozen=True)
class Population:
  """What `advjax.train.train_epoch` takes for N members: states, objective, epoch keys."""

  states: train.TrainState
  static: Any
  dynamic: Any
  keys: jax.Array

  @classmethod
  def create(
      cls, model: models.Classifier, bench: base.Bench, objective: train.Objective, seeds: list[int]
  ) -> Population:
    """Member ``m`` starts from ``seeds[m]``: its initial parameters and its epoch key."""
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    tx = train.recipe_sgd(steps_per_epoch=len(bench.train_y) // bench.config.batch)
    states = jax.vmap(lambda key: train.create_train_state(model, key, bench.train_x[:1], tx))(keys)
    static, dynamic = train.split_objective(objective, len(seeds))
    return cls(states, static, dynamic, jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys))

  def __len__(self) -> int:
    return self.keys.shape[0]

  def member(self, m: int) -> Population:
    """Member ``m`` alone, a population of one."""
    take = lambda a: a[m : m + 1]
    return Population(
        jax.tree.map(take, self.states),
        self.static,
        [take(d) for d in self.dynamic],
        take(self.keys),
    )

  def arguments(self, bench: base.Bench) -> tuple[Any, ...]:
    """`train.train_epoch`'s arguments after the model, as the epoch and its size take them."""
    return (self.static, self.dynamic, self.states, bench.train_x, bench.train_y, self.keys)

  def epoch(
      self, model: models.Classifier, bench: base.Bench, vmap_members: bool | None = None
  ) -> tuple[train.TrainState, jax.Array]:
    """One compiled epoch of every member over the training split, blocking."""
    return jax.block_until_ready(
        train.train_epoch(
            model, *self.arguments(bench), batch_size=bench.config.batch, vmap_members=vmap_members
        )
    )

  def epoch_bytes(
      self, model: models.Classifier, bench: base.Bench, vmap_members: bool | None = None
  ) -> int:
    """The compiled epoch's working set, the training split included; compiles it."""
    return harness.xla_bytes(
        train.train_epoch,
        model,
        *self.arguments(bench),
        batch_size=bench.config.batch,
        vmap_members=vmap_members,
    )


def per_step_epoch(
    step: Callable[..., Any],
    state: train.TrainState,
    x: np.ndarray,
    y: np.ndarray,
    key: jax.Array,
    batch_size: int,
) -> tuple[train.TrainState, jax.Array]:
  """One epoch as `advjax.loop.fit` ran it before the compiled epoch.

  A jitted step per batch, each batch gathered on the host by NumPy indexing
  and copied to the device, the loss summed on the device; the shuffle and
  the step keys are `advjax.train.epoch_order`'s, as in the compiled epoch.
  """
  total = jnp.zeros(())
  for i, index in enumerate(np.asarray(train.epoch_order(key, len(y), batch_size))):
    state, loss = step(state, (x[index], y[index]), jax.random.fold_in(key, i + 1))
    total = total + loss
  return jax.block_until_ready((state, total))


def kept(outputs: dict[str, Any], name: str, fn: Callable[[], Any]) -> Callable[[], None]:
  """A timed call of ``fn`` that keeps its result in ``outputs[name]`` for the cross-check."""

  def call() -> None:
    outputs[name] = fn()

  return call


def params_agreement(params: Any, reference: Any) -> dict[str, Any]:
  """How far two runs' parameters differ, against `PARAM_TOLERANCE`."""
  pairs = list(zip(jax.tree.leaves(params), jax.tree.leaves(reference)))
  worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
  scale = max(float(np.max(np.abs(np.asarray(b)))) for _, b in pairs)
  return {
      "max_param_difference": worst,
      "largest_param": scale,
      "passed": worst <= PARAM_TOLERANCE * scale,
  }


def epoch_title(bench: base.Bench, what: str, units: int | None = None) -> str:
  cfg = bench.config
  return (
      f"{what}: one epoch of adversarial training, maxout {units or cfg.units}x{cfg.pieces}, "
      f"{len(bench.train_y):,} images, batch {cfg.batch}"
  )


def epoch_section(
    title: str,
    ratio_meaning: str,
    rows: list[base.Row],
    cpu_ratio: str,
    gpu_seconds: float | None,
    gpu_target: str,
    judged: base.Row | None = None,
    cpu_at_most: float = 1.0,
) -> base.Section:
  """Epochs compared: judged by one row's ratio on a CPU, its seconds on a GPU.

  On a CPU the target is ``cpu_ratio <= cpu_at_most``. The row judged is
  ``judged``, by default the last.
  """
  judged = judged or rows[-1]
  cpu_target = f"{cpu_ratio} <= {cpu_at_most} (CPU)"
  section = base.Section(
      title, ratio_meaning, gpu_target if base.on_gpu() else cpu_target, rows, gpu_target=gpu_target
  )
  if base.on_gpu() and gpu_seconds is not None:
    return base.judge(section, judged.seconds, gpu_seconds, at_most=True, text="{:.3f} s")
  return base.judge(section, judged.ratio, cpu_at_most, at_most=True, text="{:.2f}x")


def agreement_text(check: dict[str, Any]) -> str:
  return (
      f"the parameters differ by at most {check['max_param_difference']:.2g} (largest "
      f"parameter {check['largest_param']:.2g}), "
      + ("within" if check["passed"] else "BEYOND")
      + f" the tolerance of {PARAM_TOLERANCE:g} of it"
  )


def repeats_note(cfg: base.Config, warmup: bool = False, repeats: int | None = None) -> str:
  repeats = repeats or cfg.epoch_repeats
  return (
      f"Each call is a whole epoch of every member: {repeats} timed "
      f"call{'s' if repeats > 1 else ''} a row, "
      + (
          "after one warm-up call."
          if warmup
          else "compiled ahead of time (the memory analysis) rather than by a warm-up call."
      )
  )


def work_note(steps: int) -> str:
  return (
      f"Work: XLA's count of one compiled step, times {steps} steps and the members "
      "(XLA counts a loop's body once, so the epoch's own count would be one step's)."
  )
