"""Item 8: one compiled epoch (`advjax.train.train_epoch`) against the per-step loop."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from advjax import train
from benchmarks import base
from benchmarks import harness
from benchmarks.items import _epochs

__all__ = ["ITEM"]

# Issue 10's GPU target, in seconds per epoch of adversarial training over the
# 50,000 training images in batches of 100: maxout 240x5, one model.
GPU_EPOCH_SECONDS = 0.15
# Issue 23's CPU target: the compiled epoch at most 0.9 of the per-step loop's time.
CPU_RATIO = 0.9


def compiled_epoch(bench: base.Bench) -> base.Section:
  """Item 8: the compiled epoch against the per-step loop it replaced (issue 10).

  On a CPU two more rows run both under `benchmarks.harness.CPU_RECIPE`, each program compiled
  with it as an option, so one run times the library's default and the recipe.
  """
  cfg, model = bench.config, bench.model
  steps = len(bench.train_y) // cfg.batch
  one = _epochs.Population.create(model, bench, bench.objective, [0])
  state, key = jax.tree.map(lambda a: a[0], one.states), one.keys[0]
  host_x, host_y = np.asarray(bench.train_x), np.asarray(bench.train_y)
  step = bench.adversarial_step

  def looped(program: Any) -> Any:
    return lambda: _epochs.per_step_epoch(program, state, host_x, host_y, key, cfg.batch)

  names = [
      "per-step loop: a jitted step per batch, batches from the host",
      "compiled epoch (train.train_epoch)",
  ]
  runs = {names[0]: looped(step), names[1]: lambda: one.epoch(model, bench)}
  memory = {
      names[0]: harness.xla_bytes(step, state, bench.batch, key),
      names[1]: one.epoch_bytes(model, bench),
  }
  recipe = harness.with_recipe(
      step.lower(state, bench.batch, key),
      train.train_epoch.lower(model, *one.arguments(bench), batch_size=cfg.batch),
  )
  if recipe is not None:
    recipe_step, epoch = recipe
    names += [f"{name}, CPU recipe" for name in names]
    runs[names[2]] = looped(recipe_step)
    runs[names[3]] = lambda: jax.block_until_ready(epoch(*one.arguments(bench)[1:]))
    memory[names[2]], memory[names[3]] = map(harness.compiled_bytes, (recipe_step, epoch))
  notes = _notes(names, steps)
  names.append(BACK_TO_BACK)
  runs[BACK_TO_BACK] = _back_to_back(step, state, bench, key)
  notes[BACK_TO_BACK] = (
      "the per-step loop's steps with nothing between them; memory: one step's and the batches"
  )
  memory[BACK_TO_BACK] = memory[names[0]] + bench.train_x.nbytes + bench.train_y.nbytes
  outputs: dict[str, Any] = {}
  calls = {name: _epochs.kept(outputs, name, run) for name, run in runs.items()}
  work = base.total(steps, harness.xla_flops(step, state, bench.batch, key))
  # One warm-up call: the per-step loop's eager operations (the shuffle, the
  # step keys) compile at their first use.
  timings = harness.time_interleaved(calls, cfg.epoch_repeats, warmup=1)
  rows = base.rows(
      timings,
      names[0],
      memory=memory,
      notes=notes,
      flops={name: work for name in names},
  )
  for per_step, compiled in zip(rows[:-1:2], rows[1:-1:2]):
    compiled.cross_check = _agreement(outputs[compiled.name], outputs[per_step.name])
  rows[-1].cross_check = _epochs.params_agreement(
      outputs[BACK_TO_BACK].params, outputs[names[0]][0].params
  )
  section = _epochs.epoch_section(
      _epochs.epoch_title(bench, "8. Compiled epoch vs per-step loop"),
      "median time over the per-step loop's",
      rows,
      "compiled / per-step",
      GPU_EPOCH_SECONDS,
      f"compiled epoch <= {GPU_EPOCH_SECONDS} s (GPU)",
      judged=rows[1],
      cpu_at_most=CPU_RATIO,
  )
  check = rows[1].cross_check
  section.notes += [
      f"{_epochs.repeats_note(cfg, warmup=True)} Cross-check: from the same state and epoch key, "
      f"{_epochs.agreement_text(check)}; the summed losses differ by "
      f"{check['loss_difference']:.2g}.",
      _epochs.work_note(steps),
      _floor_note(rows),
  ]
  if recipe is not None:
    section.notes.append(_recipe_note(rows))
  return section


BACK_TO_BACK = "the jitted step alone, back to back: batches and keys made before the clock"


def _back_to_back(step: Any, state: train.TrainState, bench: base.Bench, key: jax.Array) -> Any:
  """The per-step loop's steps with nothing between them: its floor on this machine.

  The batches (gathered on the device in the epoch's order) and the step keys
  exist before the timed call, which only dispatches the steps.
  """
  order = np.asarray(train.epoch_order(key, len(bench.train_y), bench.config.batch))
  batches = [(bench.train_x[index], bench.train_y[index]) for index in order]
  keys = [jax.random.fold_in(key, i + 1) for i in range(len(order))]

  def run() -> Any:
    out = state
    for batch, step_key in zip(batches, keys):
      out, _ = step(out, batch, step_key)
    return jax.block_until_ready(out)

  return run


def _floor_note(rows: list[base.Row]) -> str:
  compiled, floor = rows[1], rows[-1]
  return (
      f"The jitted step run back to back on batches made beforehand takes {floor.ratio:.2f}x "
      f"the per-step loop's time (its parameters: {_epochs.agreement_text(floor.cross_check)}): "
      f"the loop spends {1 - floor.ratio:.0%} of its time between steps (the host's batches, "
      "the keys, the dispatch), what a compiled epoch of the same step can save. The compiled "
      f"epoch takes {compiled.seconds / floor.seconds:.2f}x the back-to-back steps' time."
  )


def _agreement(compiled: Any, looped: Any) -> dict[str, Any]:
  (states, losses), (state, loss) = compiled, looped
  check = _epochs.params_agreement(jax.tree.map(lambda a: a[0], states.params), state.params)
  check["loss_difference"] = abs(float(losses[0]) - float(loss))
  return check


def _notes(names: list[str], steps: int) -> dict[str, str]:
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
  for plain, name in zip(names, names[2:]):
    notes[name] = f"{notes[plain].split(';')[0]}, compiled with {harness.CPU_RECIPE}"
  return notes


def _recipe_note(rows: list[base.Row]) -> str:
  looped, compiled = rows[2], rows[3]
  return harness.recipe_note(
      f"the compiled epoch takes {compiled.seconds / looped.seconds:.2f}x the per-step loop's "
      "time under it, "
      f"against {rows[1].ratio:.2f}x without; its parameters "
      + ("agree" if compiled.cross_check["passed"] else "DISAGREE")
      + f" with the recipe's per-step loop ({_epochs.agreement_text(compiled.cross_check)})."
  )


ITEM = base.Item(("epoch",), compiled_epoch)
