"""Item 12: AutoAttack standard against torchattacks'; item 13: the K-eps curve in one program."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import advjax
from benchmarks import base
from benchmarks import harness

__all__ = ["CURVE_ITEM", "ITEM", "RECIPE"]

IMAGE = (28, 28, 1)
OURS = "advjax.autoattack (jit)"
RECIPE = "advjax.autoattack (jit), CPU recipe"


def _settings(cfg: base.Config) -> dict[str, Any]:
  """advjax.autoattack's keyword arguments for the run's budget (the reference's in full)."""
  return {
      "num_steps": cfg.autoattack_steps,
      "num_targets": cfg.autoattack_targets,
      "fab_steps": cfg.autoattack_steps,
      "num_queries": cfg.autoattack_queries,
      "image_shape": IMAGE,
  }


def _torch_calls(bench: base.Bench, x: jax.Array, y: jax.Array) -> tuple[dict, dict, list]:
  """torchattacks' AutoAttack, with the reference's settings and as shipped, as timed calls."""
  cfg, peer = bench.config, bench.peers["torchattacks"]
  names = (
      f"torchattacks {peer.version} MultiAttack, the reference's settings (PyTorch cpu)",
      f"torchattacks {peer.version} AutoAttack as shipped (PyTorch cpu)",
  )
  if not (peer.available and bench.torch_device):
    return {}, {}, [base.missing(name, peer) for name in names]
  from benchmarks import torch_autoattack

  net = torch_autoattack.maxout_net(bench.model, bench.params, bench.torch_device)
  eps = cfg.autoattack_eps
  reference = torch_autoattack.attacks(
      net,
      eps,
      steps=cfg.autoattack_steps,
      targets=cfg.autoattack_targets,
      queries=cfg.autoattack_queries,
  )["autoattack"]
  attacks = {names[0]: reference, names[1]: torch_autoattack.shipped(net, eps)}
  masks: dict[str, np.ndarray] = {}

  def call(name: str) -> None:
    masks[name] = torch_autoattack.robust(net, attacks[name], x, y, bench.torch_device)

  return {name: functools.partial(call, name) for name in names}, masks, []


def _one(bench: base.Bench) -> Any:
  """The jitted ``(params, eps) -> robust mask`` of AutoAttack standard on the items' images."""
  cfg, model = bench.config, bench.model
  x, y = bench.test_x[: cfg.autoattack_examples], bench.test_y[: cfg.autoattack_examples]
  settings = {"key": jax.random.key(0), **_settings(cfg)}
  return jax.jit(lambda p, e: advjax.autoattack(model.scores, p, x, y, e, **settings).robust)


def autoattack_speed(bench: base.Bench) -> base.Section:
  """Item 12: advjax's AutoAttack standard against torchattacks' on the same weights."""
  ours = _one(bench)
  cfg, params = bench.config, bench.params
  n, eps = cfg.autoattack_examples, jnp.float32(cfg.autoattack_eps)
  x, y = bench.test_x[:n], bench.test_y[:n]
  robust = np.asarray(ours(params, eps))  # compiles: the warm-up
  calls, masks, missing = _torch_calls(bench, x, y)
  calls = {OURS: functools.partial(base.run_jax, ours, params, eps), **calls}
  recipe = harness.with_recipe(ours.lower(params, eps))
  if recipe is not None:
    masks[RECIPE] = np.asarray(recipe[0](params, eps))
    calls[RECIPE] = functools.partial(base.run_jax, recipe[0], params, eps)
  timings = harness.time_interleaved(calls, cfg.autoattack_repeats, warmup=0)
  masks[OURS] = robust
  budget = (
      f"APGD-CE {cfg.autoattack_steps} steps, APGD-T and FAB-T {cfg.autoattack_steps} steps x "
      f"{cfg.autoattack_targets} targets, Square {cfg.autoattack_queries:,} queries"
  )
  notes = {name: f"robust accuracy {np.mean(mask):.1%}" for name, mask in masks.items()}
  notes[OURS] += f"; {budget}, on the points still robust"
  memory = {OURS: harness.xla_bytes(ours, params, eps)}
  if recipe is not None:
    notes[RECIPE] += (
        f"; compiled with {harness.CPU_RECIPE}; "
        f"{int(np.sum(masks[RECIPE] != robust))} examples differ from advjax's default"
    )
    memory[RECIPE] = harness.compiled_bytes(recipe[0])
  # No FLOP counts: XLA counts a while loop's body once, and AutoAttack's loops
  # run a data-dependent number of times.
  rows = base.rows(timings, OURS, memory=memory, notes=notes, flops={}) + missing
  section = base.Section(
      f"12. AutoAttack standard, {n:,} test images, eps {cfg.autoattack_eps} (maxout "
      f"{cfg.units}x{cfg.pieces})",
      "median time over advjax's (above 1: advjax is faster)",
      "torchattacks (the reference's settings) / advjax >= 2",
      rows,
  )
  reference = next((row for row in rows if "reference's settings" in row.name), None)
  base.judge(section, reference and reference.ratio, 2.0, at_most=False, text="{:.2f}x")
  if recipe is not None and reference is not None and reference.seconds:
    (mine,) = [row for row in rows if row.name == RECIPE]
    section.notes.append(
        harness.recipe_note(
            f"advjax takes {mine.ratio:.2f}x its default time; torchattacks with the "
            f"reference's settings then takes {reference.seconds / mine.seconds:.2f}x advjax's."
        )
    )
  section.notes.append(
      "One timed call a row after advjax's compilation (not timed); torchattacks' AutoAttack "
      "as shipped runs APGD, APGD-T and FAB with 10 steps: less work than the reference's "
      "100, a record beside the target. Each side draws its own random numbers, so robust "
      "accuracies may differ by a few images."
  )
  return section


def autoattack_curve(bench: base.Bench) -> base.Section:
  """Item 13: robust accuracy at K values of eps, one program against K calls of item 12's."""
  one = _one(bench)
  cfg, model, params = bench.config, bench.model, bench.params
  n = cfg.autoattack_examples
  x, y = bench.test_x[:n], bench.test_y[:n]
  settings = {"key": jax.random.key(0), **_settings(cfg)}
  eps_values = jnp.asarray(cfg.curve_eps, jnp.float32)
  curve = jax.jit(lambda p, e: advjax.autoattack_curve(model.scores, p, x, y, e, **settings).robust)

  def separate() -> list[jax.Array]:
    return jax.block_until_ready([one(params, eps) for eps in eps_values])

  together = np.asarray(curve(params, eps_values))  # compiles both: the warm-up
  alone = np.asarray(separate())
  names = (
      f"{len(eps_values)} separate jitted autoattack calls",
      "advjax.autoattack_curve (one program)",
  )
  calls = {names[0]: separate, names[1]: functools.partial(base.run_jax, curve, params, eps_values)}
  timings = harness.time_interleaved(calls, cfg.autoattack_repeats, warmup=0)
  accuracy = ", ".join(f"{e:g}: {a:.1%}" for e, a in zip(cfg.curve_eps, together.mean(axis=1)))
  notes = {names[1]: f"robust accuracy {accuracy}"}
  memory = {
      names[0]: harness.xla_bytes(one, params, eps_values[0]),
      names[1]: harness.xla_bytes(curve, params, eps_values),
  }
  rows = base.rows(timings, names[0], memory=memory, notes=notes, flops={})
  section = base.Section(
      f"13. AutoAttack curve over eps {list(cfg.curve_eps)}, {n:,} test images",
      "median time over the separate calls'",
      "one program / separate <= 1.0 (CPU)",
      rows,
  )
  base.judge(section, rows[1].ratio, 1.0, at_most=True, text="{:.2f}x")
  rows[1].cross_check = {"examples_differing": int(np.sum(together != alone))}
  section.notes.append(
      f"Cross-check: the curve's robust masks differ from the separate calls' on "
      f"{int(np.sum(together != alone))} of {together.size} (example, eps) pairs."
  )
  return section


# Two items, so that `python -m benchmarks --only autoattack` reruns item 12 without the
# curve's quarter of an hour; each compiles its own AutoAttack.
ITEM = base.Item(("autoattack",), autoattack_speed)
CURVE_ITEM = base.Item(("autoattack_curve",), autoattack_curve)
