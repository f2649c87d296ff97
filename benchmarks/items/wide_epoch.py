"""Item 11: one compiled epoch of the paper's wide maxout (M5), a GPU target."""

from __future__ import annotations

import jax
import numpy as np

from advjax import models
from advjax import train
from benchmarks import base
from benchmarks import harness
from benchmarks.items import _epochs

__all__ = ["ITEM"]

# Issue 10's GPU target, in seconds per epoch (as item 8's): maxout 1600x5
# (the paper's M5), one model.
GPU_WIDE_SECONDS = 0.5


def wide_epoch(bench: base.Bench) -> base.Section:
  """Item 11: one compiled epoch of the paper's wide maxout (M5), a GPU target.

  A CPU run skips it unless its config says otherwise: it is about 15x the
  work of the 240-unit epoch.
  """
  cfg = bench.config
  gpu_target = f"compiled epoch <= {GPU_WIDE_SECONDS} s (GPU)"
  title = _epochs.epoch_title(bench, "11. Wide model, compiled epoch", cfg.wide_units)
  name = "compiled epoch (train.train_epoch)"
  cpu_target = "a GPU target; a record on a CPU"
  model = models.maxout_mlp(cfg.wide_units, cfg.pieces)
  if not base.on_gpu() and not cfg.wide_on_cpu:
    work = _weights(model, bench) / _weights(bench.model, bench)
    return base.Section(
        title,
        "a single row, no ratio",
        cpu_target,
        [
            base.Row(
                name,
                status=(
                    f"not run on a CPU: about {work:.0f}x the work of the {cfg.units}-unit epoch"
                ),
            )
        ],
        gpu_target=gpu_target,
    )
  one = _epochs.Population.create(model, bench, bench.objective, [0])
  step = jax.jit(train.make_train_step(model, bench.objective))
  state, key = jax.tree.map(lambda a: a[0], one.states), one.keys[0]
  steps = len(bench.train_y) // cfg.batch
  memory = {name: one.epoch_bytes(model, bench)}
  flops = {name: base.total(steps, harness.xla_flops(step, state, bench.batch, key))}
  timings = harness.time_interleaved(
      {name: lambda: one.epoch(model, bench)}, cfg.epoch_repeats, warmup=0
  )
  rows = base.rows(
      timings, name, memory=memory, flops=flops, notes={name: "train_epoch with one member"}
  )
  section = base.Section(
      title,
      "a single row, no ratio",
      gpu_target if base.on_gpu() else cpu_target,
      rows,
      gpu_target=gpu_target,
  )
  if base.on_gpu():
    base.judge(section, rows[0].seconds, GPU_WIDE_SECONDS, at_most=True, text="{:.3f} s")
  else:
    base.record(section, rows[0].seconds, "{:.2f} s")
  section.notes += [_epochs.repeats_note(cfg), _epochs.work_note(steps)]
  return section


def _weights(model: models.Classifier, bench: base.Bench) -> int:
  """Entries of the model's weight matrices: its matrix-product work per example."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), bench.train_x[:1])
  return sum(
      int(np.prod(leaf.shape))
      for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
      if getattr(path[-1], "key", None) == "kernel"
  )


ITEM = base.Item(("wide_epoch",), wide_epoch)
