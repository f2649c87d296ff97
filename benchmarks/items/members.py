"""Items 9 and 10: a population in one compiled epoch against its members run one by one."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from advjax import train
from benchmarks import base
from benchmarks import harness
from benchmarks.items import _epochs

__all__ = ["ITEM"]

# Issue 10's GPU target for item 9, in seconds per epoch (as item 8's): five
# seeds of maxout 240x5, vmapped.
GPU_SEEDS_SECONDS = 0.5


def member_epochs(bench: base.Bench) -> list[base.Section]:
  """Items 9 and 10: N members in one compiled epoch against N sequential epochs.

  Item 9 is N seeds of the paper's objective (issue 10); item 10 the
  training-time eps study (issue 13): one member per eps of `base.STUDY_EPS`, all
  from the same seed, so that only eps tells them apart.
  """
  cfg, model = bench.config, bench.model
  seeds = _epochs.Population.create(model, bench, bench.objective, list(range(cfg.seeds)))
  study = _epochs.Population.create(
      model, bench, train.Adversarial(list(cfg.study_eps), cfg.alpha), [0] * len(cfg.study_eps)
  )
  gpu_seeds = f"vmapped {cfg.seeds}-seed epoch <= {GPU_SEEDS_SECONDS} s (GPU)"
  return [
      _members_section(
          bench,
          seeds,
          _epochs.epoch_title(
              bench, f"9. {cfg.seeds} seeds in one compiled epoch vs {cfg.seeds} sequential runs"
          ),
          gpu_seeds,
          GPU_SEEDS_SECONDS,
      ),
      _members_section(
          bench,
          study,
          _epochs.epoch_title(
              bench,
              f"10. Eps study, {len(cfg.study_eps)} members (eps "
              f"{', '.join(f'{e:g}' for e in cfg.study_eps)}, alpha {cfg.alpha:g}) in one compiled "
              "epoch vs sequential runs",
          ),
          "population / sequential <= 1.0 (GPU)",
          None,
      ),
  ]


def _members_section(
    bench: base.Bench,
    population: _epochs.Population,
    title: str,
    gpu_target: str,
    gpu_seconds: float | None,
) -> base.Section:
  """N sequential one-member compiled epochs against one compiled epoch of all N.

  The population's epoch runs as `advjax.loop.fit_members` runs it on this
  backend (`advjax.train.train_epoch`: on a CPU the members' steps in turn, on
  an accelerator vmapped); on a CPU a last row times the vmapped form too.
  """
  cfg, model = bench.config, bench.model
  n, steps = len(population), len(bench.train_y) // cfg.batch
  alone = [population.member(m) for m in range(n)]
  vmapped_too = not train.vmaps_members()
  form = "in turn" if vmapped_too else "vmapped"
  names = [
      f"{n} sequential compiled epochs of one member",
      f"one compiled epoch of {n} members, {form} (the backend's choice)",
  ]
  outputs: dict[str, Any] = {}
  runs = {
      names[0]: lambda: [member.epoch(model, bench) for member in alone],
      names[1]: lambda: population.epoch(model, bench),
  }
  memory = {
      names[0]: alone[0].epoch_bytes(model, bench) + (n - 1) * harness.tree_bytes(alone[0].states),
      names[1]: population.epoch_bytes(model, bench),
  }
  notes = {
      names[0]: (
          "train_epoch with one member, once per member; memory: one epoch's "
          f"working set + the other {n - 1} members' states"
      ),
      names[1]: f"train_epoch with every member: {_FORMS[form]}",
  }
  if vmapped_too:
    names.append(f"one compiled epoch of {n} members, vmapped")
    runs[names[2]] = lambda: population.epoch(model, bench, vmap_members=True)
    memory[names[2]] = population.epoch_bytes(model, bench, vmap_members=True)
    notes[names[2]] = f"train_epoch(..., vmap_members=True): {_FORMS['vmapped']}"
  calls = {name: _epochs.kept(outputs, name, run) for name, run in runs.items()}
  state, key = jax.tree.map(lambda a: a[0], alone[0].states), alone[0].keys[0]
  work = base.total(n * steps, harness.xla_flops(bench.adversarial_step, state, bench.batch, key))
  timings = harness.time_interleaved(calls, cfg.members_repeats, warmup=0)
  rows = base.rows(
      timings, names[0], memory=memory, notes=notes, flops={name: work for name in names}
  )
  for row in rows[1:]:
    row.cross_check = _members_agreement(outputs[row.name], outputs[names[0]])
  check = rows[-1].cross_check
  section = _epochs.epoch_section(
      title,
      "median time over the sequential runs'",
      rows,
      "population / sequential",
      gpu_seconds,
      gpu_target,
      judged=rows[1],
  )
  chosen = rows[1].cross_check
  section.notes += [
      f"{_epochs.repeats_note(cfg, repeats=cfg.members_repeats)} Cross-check: the population's "
      f"members' parameters differ from their runs alone by at most "
      f"{chosen['max_param_difference']:.2g}. Each vmapped member's summed loss lies at least "
      f"{check['min_ratio']:.3g} times closer to its own run alone than to any other member's "
      "run alone ("
      + ("each is" if check["passed"] else "NOT each")
      + f" closer by a factor of {_epochs.IDENTIFICATION_MARGIN} or more; the largest gap to its "
      f"own run is {check['max_loss_difference']:.2g}). Its "
      f"parameters drift from its run alone by at most {check['max_param_difference']:.2g} "
      f"(largest parameter {check['largest_param']:.2g}): rounding of the batched "
      "products, which FGSM's sign amplifies.",
      _epochs.work_note(steps),
  ]
  return section


_FORMS = {
    "in turn": "each step runs the members' unbatched steps one after another",
    "vmapped": "vmap over members inside the scan (batched products)",
}


def _members_agreement(
    vmapped: tuple[train.TrainState, jax.Array], alone: list[tuple[train.TrainState, jax.Array]]
) -> dict[str, Any]:
  """Whether each vmapped member is its own run alone, judged by the summed losses."""
  n = len(alone)
  losses = np.asarray(vmapped[1], np.float64)
  alone_losses = np.array([float(loss[0]) for _, loss in alone])
  gaps = np.abs(losses[:, None] - alone_losses[None, :])
  own = np.diag(gaps)
  others = np.where(np.eye(n, dtype=bool), np.inf, gaps).min(axis=1)
  drift = [
      _epochs.params_agreement(
          jax.tree.map(lambda a, m=m: a[m], vmapped[0].params),
          jax.tree.map(lambda a: a[0], state.params),
      )
      for m, (state, _) in enumerate(alone)
  ]
  return {
      "max_loss_difference": float(own.max()),
      "min_loss_separation": float(others.min()),
      # Per member: how many times closer to its own run than to the nearest other's.
      "min_ratio": float(np.min(others / np.maximum(own, np.finfo(np.float64).tiny))),
      "max_param_difference": max(d["max_param_difference"] for d in drift),
      "largest_param": max(d["largest_param"] for d in drift),
      "passed": bool(np.all(own * _epochs.IDENTIFICATION_MARGIN <= others)),
  }


ITEM = base.Item(("seeds_epoch", "eps_study_epoch"), member_epochs)
