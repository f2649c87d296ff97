"""Item 8: one compiled epoch (`advjax.train.train_epoch`) against the per-step loop."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from benchmarks import base
from benchmarks import harness
from benchmarks.items import _epochs

__all__ = ["ITEM"]

# Issue 10's GPU target, in seconds per epoch of adversarial training over the
# 50,000 training images in batches of 100: maxout 240x5, one model.
GPU_EPOCH_SECONDS = 0.15


def compiled_epoch(bench: base.Bench) -> base.Section:
  """Item 8: the compiled epoch against the per-step loop it replaced (issue 10)."""
  cfg, model = bench.config, bench.model
  steps = len(bench.train_y) // cfg.batch
  one = _epochs.Population.create(model, bench, bench.objective, [0])
  state, key = jax.tree.map(lambda a: a[0], one.states), one.keys[0]
  host_x, host_y = np.asarray(bench.train_x), np.asarray(bench.train_y)
  step = bench.adversarial_step
  names = (
      "per-step loop: a jitted step per batch, batches from the host",
      "compiled epoch (train.train_epoch)",
  )
  outputs: dict[str, Any] = {}
  calls = {
      names[0]: _epochs.kept(
          outputs,
          names[0],
          lambda: _epochs.per_step_epoch(step, state, host_x, host_y, key, cfg.batch),
      ),
      names[1]: _epochs.kept(outputs, names[1], lambda: one.epoch(model, bench)),
  }
  memory = {
      names[0]: harness.xla_bytes(step, state, bench.batch, key),
      names[1]: one.epoch_bytes(model, bench),
  }
  work = base.total(steps, harness.xla_flops(step, state, bench.batch, key))
  notes = {
      names[0]: (
          f"{steps} calls of jit(make_train_step(model, Adversarial(0.25))), "
          "as fit ran before; memory: one step's (the data stays on the host)"
      ),
      names[1]: (
          "lax.scan over the steps, shuffle and batches on the device; memory "
          "includes the training split"
      ),
  }
  # One warm-up call: the per-step loop's eager operations (the shuffle, the
  # step keys) compile at their first use.
  timings = harness.time_interleaved(calls, cfg.epoch_repeats, warmup=1)
  rows = base.rows(
      timings, names[0], memory=memory, notes=notes, flops={name: work for name in names}
  )
  (looped, looped_loss), (compiled, compiled_loss) = outputs[names[0]], outputs[names[1]]
  rows[1].cross_check = _epochs.params_agreement(
      jax.tree.map(lambda a: a[0], compiled.params), looped.params
  )
  rows[1].cross_check["loss_difference"] = abs(float(compiled_loss[0]) - float(looped_loss))
  section = _epochs.epoch_section(
      _epochs.epoch_title(bench, "8. Compiled epoch vs per-step loop"),
      "median time over the per-step loop's",
      rows,
      "compiled / per-step <= 1.0 (CPU)",
      GPU_EPOCH_SECONDS,
      f"compiled epoch <= {GPU_EPOCH_SECONDS} s (GPU)",
  )
  section.notes += [
      f"{_epochs.repeats_note(cfg, warmup=True)} Cross-check: from the same state and epoch key, "
      f"{_epochs.agreement_text(rows[1].cross_check)}; the summed losses differ by "
      f"{rows[1].cross_check['loss_difference']:.2g}.",
      _epochs.work_note(steps),
  ]
  return section


ITEM = base.Item(("epoch",), compiled_epoch)
