"""Item 7: the adversarial step data-parallel over 1, 2 and 4 devices."""

from __future__ import annotations

import functools

import jax

from advjax import sharding
from advjax import train
from benchmarks import base
from benchmarks import harness

__all__ = ["ITEM"]


def sharded_step(bench: base.Bench) -> base.Section:
  """The adversarial step data-parallel over 1, 2 and 4 devices (the scale-out issue).

  On a CPU the devices are forced host devices (``benchmarks/__init__.py``)
  sharing the machine's cores, so this records what sharding costs there
  rather than a speed-up; on a machine with several accelerators it is the
  scaling of one step.
  """
  cfg, model = bench.config, bench.model
  counts = [n for n in (1, 2, 4) if n <= jax.device_count() and cfg.batch % n == 0]
  tx = train.recipe_sgd(steps_per_epoch=500)
  state = train.create_train_state(model, jax.random.key(0), bench.train_x[:1], tx)
  rng = jax.random.key(1)
  calls, memory, notes, flops = {}, {}, {}, {}
  for n in counts:
    mesh = sharding.data_mesh(n)
    replicated = sharding.replicated(mesh)
    step = jax.jit(
        train.make_train_step(model, train.Adversarial(cfg.eps, cfg.alpha)),
        in_shardings=(replicated, sharding.split_leading(mesh), replicated),
        out_shardings=(replicated, replicated),
    )
    args = (sharding.replicate(state, mesh), sharding.shard_batch(bench.batch, mesh), rng)
    name = f"{n} device{'s' if n > 1 else ''}"
    calls[name] = functools.partial(base.run_jax, step, *args)
    memory[name] = harness.xla_bytes(step, *args)
    notes[name] = (
        f"make_train_step(model, Adversarial(0.25)) jitted over data_mesh({n}): "
        f"{cfg.batch // n} examples per device; memory summed over devices"
    )
    if n == 1:  # Every row does the one-device step's work, split over its devices.
      work = harness.xla_flops(step, *args)
    flops[name] = work
  timings = harness.time_interleaved(calls, cfg.step_repeats)
  rows = base.rows(timings, next(iter(calls)), memory=memory, notes=notes, flops=flops)
  platform = jax.devices()[0].platform
  section = base.Section(
      f"7. Adversarial train step, data-parallel over {', '.join(map(str, counts))} "
      f"{platform} devices, maxout {cfg.units}x{cfg.pieces}, global batch {cfg.batch}",
      "median time over the 1-device step's",
      "a record, no target: forced host devices share the CPU's cores"
      if platform == "cpu"
      else "a record, no target",
      rows,
  )
  return base.record(section, rows[-1].ratio, f"{{:.2f}}x on {counts[-1]} device(s)")


ITEM = base.Item(("sharded_step",), sharded_step)
