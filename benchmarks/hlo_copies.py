"""``python -m benchmarks.hlo_copies``: what the compiled epoch's loop body copies.

XLA runs `advjax.train.train_epoch`'s ``lax.scan`` as a while loop whose carry
(the training state) should be updated in place. Where it cannot prove that a
buffer may be overwritten, it inserts a ``copy`` of it into every iteration.
This script compiles the epoch of benchmark item 8 (maxout 240x5, batch 100,
50,000 images; compile only, nothing runs) and counts the ``copy`` operations
and the bytes they move per step in the loop body, beside those of one jitted
step (`advjax.train.make_train_step`) of the same model and objective.

Copies inside nested loops (the PRNG's threefry loops), the epoch's entry
computation (run once an epoch: it copies the caller's states into the loop,
which donating them would avoid) and whole-module totals are listed too; a
fused computation's ``copy`` is not counted (it moves no buffer of its own).

Beside the copies, each program's matrix products (`products`): the loop body
should run as many as the jitted step. Before `advjax.models.Dropout` drew the
masks once a step, the 240x5 epoch's body ran 22 against the step's 19 (three
forward passes, each with its own draw of the masks, where the step ran two),
and held 88 copies against 43 now.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp

from advjax import models
from advjax import train

__all__ = ["Copies", "count", "entry", "epoch_body", "epoch_hlo", "main", "products", "step_hlo"]

_HEADER = re.compile(r"^(?:ENTRY )?%?(\S+) ")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%\S+ = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\(")
_CALLED = re.compile(r"(?:body|condition|to_apply|calls|branch_computations)=\{?%?([\w.\-]+)")
_SHAPE = re.compile(r"^(pred|[a-z]+)(\d*)\[([\d,]*)\]")
_EPOCH_LOOP = 'op_name="jit(train_epoch)/while"'


@dataclasses.dataclass(frozen=True)
class Copies:
  """``copy`` operations of one HLO computation (and the loops it runs).

  Attributes:
    ops: copy instructions in the computation itself.
    bytes: the bytes those copies write, per execution of the computation.
    nested_ops: copy instructions in the while loops it calls (each run per
      iteration of that loop).
    module_ops: copy instructions in the whole module, fused computations excluded.
  """

  ops: int
  bytes: int
  nested_ops: int
  module_ops: int


def _computations(hlo: str) -> dict[str, list[str]]:
  """The instruction lines of each computation of an HLO module text, by name."""
  computations: dict[str, list[str]] = {}
  lines: list[str] = []
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      match = _HEADER.match(line)
      if match:
        lines = computations.setdefault(match.group(1), [])
        continue
    if line.startswith("  "):
      lines.append(line)
  return computations


def _bytes(shape: str) -> int:
  """Bytes of an array shape such as ``f32[240,1200]``; 0 for a tuple."""
  match = _SHAPE.match(shape)
  if match is None:
    return 0
  kind, bits, dims = match.groups()
  size = 1 if kind == "pred" else int(bits) // 8
  return size * math.prod(int(d) for d in dims.split(",") if d)


def _copies(lines: list[str]) -> list[str]:
  """The result shapes of the copy instructions among ``lines``."""
  shapes = []
  for line in lines:
    match = _INSTRUCTION.match(line)
    if match and match.group(2) == "copy":
      shapes.append(match.group(1))
  return shapes


def _loops(computations: dict[str, list[str]], name: str) -> list[str]:
  """The bodies and conditions of the while loops that ``name`` runs, nested ones too."""
  found: list[str] = []
  for line in computations[name]:
    if " while(" in line:
      for called in _CALLED.findall(line):
        found += [called, *_loops(computations, called)]
  return found


def count(hlo: str, computation: str) -> Copies:
  """Counts the copies of ``computation`` in the optimised HLO module text ``hlo``.

  Args:
    hlo: ``jitted.lower(...).compile().as_text()``.
    computation: the name of one of its computations.

  Returns:
    The computation's `Copies`.
  """
  computations = _computations(hlo)
  fused = {
      called
      for lines in computations.values()
      for line in lines
      if " fusion(" in line
      for called in _CALLED.findall(line)
  }
  shapes = _copies(computations[computation])
  nested = sum(len(_copies(computations[name])) for name in _loops(computations, computation))
  module = sum(len(_copies(lines)) for name, lines in computations.items() if name not in fused)
  return Copies(len(shapes), sum(_bytes(s) for s in shapes), nested, module)


def products(hlo: str, computation: str) -> int:
  """The matrix products (``dot`` instructions) that one run of ``computation`` performs.

  Products inside its fusions count (XLA:CPU wraps most of them into library
  fusions); those of the loops it calls do not. A training step of the maxout
  network runs two forward passes and three backward passes: the attack's
  forward pass is the clean term's. A loop body that runs more products than
  the jitted step recomputes a pass.

  Args:
    hlo: ``jitted.lower(...).compile().as_text()``.
    computation: the name of one of its computations.

  Returns:
    The number of products.
  """
  computations = _computations(hlo)

  def count_in(name: str) -> int:
    total = 0
    for line in computations[name]:
      match = _INSTRUCTION.match(line)
      if match and match.group(2) == "dot":
        total += 1
      elif match and match.group(2) == "fusion":
        total += sum(count_in(called) for called in _CALLED.findall(line))
    return total

  return count_in(computation)


def epoch_body(hlo: str) -> str:
  """The name of the compiled epoch's loop body (the scan over the steps) in ``hlo``."""
  for lines in _computations(hlo).values():
    for line in lines:
      if " while(" in line and _EPOCH_LOOP in line:
        return re.search(r"body=%?([\w.\-]+)", line).group(1)
  raise ValueError("no while loop of jit(train_epoch) in this HLO module.")


def entry(hlo: str) -> str:
  """The name of the entry computation of ``hlo``."""
  for line in hlo.splitlines():
    if line.startswith("ENTRY "):
      return _HEADER.match(line).group(1)
  raise ValueError("no ENTRY computation in this HLO module.")


def _setup(units: int, pieces: int, batch: int, examples: int, members: int) -> dict[str, Any]:
  model = models.maxout_mlp(units, pieces)
  x = jax.ShapeDtypeStruct((examples, 784), jnp.float32)
  y = jax.ShapeDtypeStruct((examples,), jnp.int32)
  tx = train.recipe_sgd(steps_per_epoch=examples // batch)
  keys = jax.vmap(jax.random.key)(jnp.arange(members))
  sample = jnp.zeros((1, 784), jnp.float32)
  states = jax.vmap(lambda key: train.create_train_state(model, key, sample, tx))(keys)
  return {"model": model, "x": x, "y": y, "keys": keys, "states": states}


def epoch_hlo(
    objective: train.Objective, units: int, pieces: int, batch: int, examples: int, members: int
) -> str:
  """The optimised HLO of `advjax.train.train_epoch` for ``members`` maxout members."""
  s = _setup(units, pieces, batch, examples, members)
  static, dynamic = train.split_objective(objective, members)
  lowered = train.train_epoch.lower(
      s["model"], static, dynamic, s["states"], s["x"], s["y"], s["keys"], batch_size=batch
  )
  return lowered.compile().as_text()


def step_hlo(objective: train.Objective, units: int, pieces: int, batch: int) -> str:
  """The optimised HLO of one jitted `advjax.train.make_train_step` of the same model."""
  s = _setup(units, pieces, batch, batch, 1)
  state = jax.tree.map(lambda a: a[0], s["states"])
  batch_data = (jnp.zeros((batch, 784), jnp.float32), jnp.zeros((batch,), jnp.int32))
  step = jax.jit(train.make_train_step(s["model"], objective))
  return step.lower(state, batch_data, jax.random.key(0)).compile().as_text()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.hlo_copies", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--units", type=int, default=240)
  parser.add_argument("--pieces", type=int, default=5)
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument(
      "--members", type=int, nargs="+", default=[1, 5], help="population sizes of the epochs"
  )
  args = parser.parse_args(argv)
  objective = train.Adversarial(eps=0.25, alpha=0.5)
  print(
      f"copy operations, maxout {args.units}x{args.pieces}, batch {args.batch}, "
      f"{args.examples:,} examples, Adversarial(0.25), {jax.devices()[0].platform}"
  )
  print(
      f"{'program':<28} {'copies':>7} {'bytes copied':>13} {'in nested loops':>16} "
      f"{'module':>7} {'products':>9}"
  )
  hlo = step_hlo(objective, args.units, args.pieces, args.batch)
  rows = [("one jitted step", hlo, entry(hlo))]
  for members in args.members:
    hlo = epoch_hlo(objective, args.units, args.pieces, args.batch, args.examples, members)
    rows.append((f"epoch loop body, {members} member(s)", hlo, epoch_body(hlo)))
    rows.append(("  its entry (once an epoch)", hlo, entry(hlo)))
  for name, hlo, computation in rows:
    c = count(hlo, computation)
    print(
        f"{name:<28} {c.ops:>7} {c.bytes:>13,} {c.nested_ops:>16} {c.module_ops:>7} "
        f"{products(hlo, computation):>9}"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
