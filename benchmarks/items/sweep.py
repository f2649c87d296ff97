"""Item 4: the epsilon sweep against the idiomatic loop of jitted calls."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import advjax
from advjax import models
from advjax import sweeps
from benchmarks import base
from benchmarks import harness

__all__ = ["ITEM"]


def epsilon_sweeps(bench: base.Bench) -> base.Section:
  """Item 4: `advjax.epsilon_sweep` against a loop of jitted FGSM and evaluation."""
  cfg, model, params = bench.config, bench.model, bench.params
  x, y = bench.test_x, bench.test_y
  eps_values = jnp.linspace(0.0, 2 * cfg.eps, cfg.sweep_eps)
  loss_fn, probs_fn, split = model.loss_fn(), model.probabilities, models.maxout_linear_first(model)
  batch = cfg.sweep_batch if jax.devices()[0].platform == "cpu" else None

  attack = jax.jit(lambda p, x, y, e: advjax.fgsm(loss_fn, p, x, y, e))
  evaluate = jax.jit(lambda p, x, y: advjax.error_and_confidence(probs_fn(p, x), y))

  def loop() -> list[Any]:
    return jax.block_until_ready([evaluate(params, attack(params, x, y, e), y) for e in eps_values])

  def sweep_with(fn: Any) -> Callable[..., sweeps.SweepResult]:
    return jax.jit(
        lambda p, x, y, e: sweeps.epsilon_sweep(loss_fn, fn, p, x, y, e, batch_size=batch)
    )

  names = (
      "idiomatic loop: jitted fgsm + jitted evaluation per eps",
      "advjax.epsilon_sweep, linear first layer (LinearFirst)",
      "advjax.epsilon_sweep, generic model function",
  )
  fast, generic = sweep_with(split), sweep_with(probs_fn)
  calls = {
      names[0]: loop,
      names[1]: functools.partial(base.run_jax, fast, params, x, y, eps_values),
      names[2]: functools.partial(base.run_jax, generic, params, x, y, eps_values),
  }
  memory = {
      names[0]: max(
          harness.xla_bytes(attack, params, x, y, eps_values[0]),
          harness.xla_bytes(evaluate, params, x, y),
      ),
      names[1]: harness.xla_bytes(fast, params, x, y, eps_values),
      names[2]: harness.xla_bytes(generic, params, x, y, eps_values),
  }
  notes = {
      names[0]: f"{cfg.sweep_eps} x (fgsm on all {len(y):,} images, then evaluation)",
      names[1]: (
          f"batches of {batch or len(y):,}: one input gradient per batch, the "
          "first layer on x and on sign(grad) once, the layers above per eps"
      ),
      names[2]: (
          f"batches of {batch or len(y):,}: one input gradient per batch, the "
          "whole model per eps"
      ),
  }
  # A sweep walks its batches in a loop, whose body XLA counts once: every
  # batch (the last one padded) costs what the first costs.
  size = batch or len(y)
  batches = -(-len(y) // size)
  flops = {
      names[0]: base.total(
          cfg.sweep_eps,
          harness.xla_flops(attack, params, x, y, eps_values[0]),
          harness.xla_flops(evaluate, params, x, y),
      ),
      names[1]: base.total(
          batches, harness.xla_flops(fast, params, x[:size], y[:size], eps_values)
      ),
      names[2]: base.total(
          batches, harness.xla_flops(generic, params, x[:size], y[:size], eps_values)
      ),
  }
  # The cross-check runs every call once, compiling it: that is the warm-up.
  looped = np.array([float(error) for error, _ in loop()])
  differences = {
      name: float(np.max(np.abs(np.asarray(fn(params, x, y, eps_values).error) - looped)))
      for name, fn in ((names[1], fast), (names[2], generic))
  }
  timings = harness.time_interleaved(calls, cfg.sweep_repeats, warmup=0)
  rows = base.rows(timings, names[0], memory=memory, notes=notes, flops=flops)
  section = base.Section(
      f"4. Epsilon sweep, {cfg.sweep_eps} values over {len(y):,} test images",
      "median time over the loop's",
      "sweep / loop <= 0.15",
      rows,
  )
  base.judge(section, rows[1].ratio, 0.15, at_most=True, text="{:.3f}x")
  for row in rows[1:]:
    row.cross_check = {"max_error_difference_vs_loop": differences[row.name]}
  section.notes.append(
      "Cross-check: the largest difference between a sweep's error curve and the "
      "loop's is "
      + ", ".join(f"{d:.2g}" for d in differences.values())
      + " (fast path, generic path)."
  )
  return section


ITEM = base.Item(("sweep",), epsilon_sweeps)
