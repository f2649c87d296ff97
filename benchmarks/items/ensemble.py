"""Item 5: one vmapped training step of an ensemble against sequential steps."""

from __future__ import annotations

import functools

import jax

from advjax import ensembles
from advjax import train
from benchmarks import base
from benchmarks import harness

__all__ = ["ITEM"]


def ensemble_step(bench: base.Bench) -> base.Section:
  """Item 5: one vmapped step of N members against N sequential steps."""
  cfg, model = bench.config, bench.model
  members = cfg.members
  tx = train.recipe_sgd(steps_per_epoch=500)
  sample = bench.train_x[:1]
  states = ensembles.init_ensemble(
      lambda key: train.create_train_state(model, key, sample, tx), jax.random.key(2), members
  )
  rngs = jax.random.split(jax.random.key(3), members)
  single = train.make_train_step(model, train.Clean())
  step = jax.jit(single)
  vmapped = jax.jit(ensembles.ensemble_step(single))
  singles = ensembles.unstack(states)
  batch = bench.batch

  def sequential() -> None:
    jax.block_until_ready([step(s, batch, r) for s, r in zip(singles, rngs)])

  names = (f"{members} sequential jitted steps", "one vmapped step (ensembles.ensemble_step)")
  calls = {
      names[0]: sequential,
      names[1]: functools.partial(base.run_jax, vmapped, states, batch, rngs),
  }
  one_state = harness.tree_bytes(singles[0])
  memory = {
      names[0]: harness.xla_bytes(step, singles[0], batch, rngs[0]) + (members - 1) * one_state,
      names[1]: harness.xla_bytes(vmapped, states, batch, rngs),
  }
  notes = {
      names[0]: "make_train_step(model, Clean()) per member; memory: one step's "
      f"working set + the other {members - 1} members' states",
      names[1]: "jit(ensemble_step(train_step)), shared batch, one rng per member",
  }
  flops = {
      names[0]: base.total(members, harness.xla_flops(step, singles[0], batch, rngs[0])),
      names[1]: harness.xla_flops(vmapped, states, batch, rngs),
  }
  timings = harness.time_interleaved(calls, cfg.ensemble_repeats)
  rows = base.rows(timings, names[0], memory=memory, notes=notes, flops=flops)
  gpu_target = "vmapped / sequential <= 0.33 (GPU)"
  section = base.Section(
      f"5. Ensemble of {members} maxout {cfg.units}x{cfg.pieces}: one training step, "
      f"batch {cfg.batch}",
      "median time over the sequential steps'",
      gpu_target if base.on_gpu() else "vmapped / sequential <= 1.0 (CPU)",
      rows,
      gpu_target=gpu_target,
  )
  return base.judge(
      section, rows[1].ratio, 1 / 3 if base.on_gpu() else 1.0, at_most=True, text="{:.2f}x"
  )


ITEM = base.Item(("ensemble",), ensemble_step)
