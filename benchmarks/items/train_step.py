"""Items 1 and 2: the adversarial train step, against the clean step and against PyTorch eager."""

from __future__ import annotations

import functools
import re
from typing import Any

import jax

from advjax import models
from advjax import train
from benchmarks import base
from benchmarks import harness

__all__ = ["ITEM"]


def train_steps(bench: base.Bench) -> list[base.Section]:
  """Items 1 and 2: the adversarial step against the clean step and against PyTorch eager."""
  cfg, model = bench.config, bench.model
  state = train.create_train_state(
      model, jax.random.key(0), bench.train_x[:1], train.recipe_sgd(steps_per_epoch=500)
  )
  batch, rng = bench.batch, jax.random.key(1)
  clean, adversarial = "advjax clean step", "advjax adversarial step"
  steps = {
      clean: jax.jit(train.make_train_step(model, train.Clean())),
      adversarial: bench.adversarial_step,
  }
  calls = {
      name: functools.partial(base.run_jax, step, state, batch, rng) for name, step in steps.items()
  }
  memory = {name: harness.xla_bytes(step, state, batch, rng) for name, step in steps.items()}
  flops = {name: harness.xla_flops(step, state, batch, rng) for name, step in steps.items()}
  dots = {name: _dot_count(step, state, batch, rng) for name, step in steps.items()}
  notes = {
      clean: "make_train_step(model, Clean()): dropout, SGD+momentum, column-norm projection",
      adversarial: (
          "make_train_step(model, Adversarial(0.25)): adversarial_loss, "
          "2 forward + 3 backward passes"
      ),
  }
  torch_adv, torch_clean = "PyTorch eager adversarial step", "PyTorch eager clean step"
  torch_peer = bench.peers["torch"]
  if torch_peer.available:
    from benchmarks import torch_maxout

    dev = bench.torch_device
    net = base.torch_model(bench, state.params)
    optimizer = torch_maxout.sgd(net)
    x, y = (torch_maxout.tensor(a, dev) for a in batch)
    for name, eps in ((torch_adv, cfg.eps), (torch_clean, None)):
      calls[name] = functools.partial(
          base.run_torch,
          dev,
          torch_maxout.train_step,
          net,
          optimizer,
          x,
          y,
          eps=eps,
          alpha=cfg.alpha,
          max_norm=models.MAX_COL_NORM,
      )
    notes[torch_adv] = (
        "same model, shared dropout mask, torch.optim.SGD; one backward "
        "yields param and input gradients: 2 forward + 2 backward passes"
    )
    notes[torch_clean] = "same step on J(x) alone"
  timings = harness.time_interleaved(calls, cfg.step_repeats)
  if torch_peer.available:
    momentum = [entry["momentum_buffer"] for entry in optimizer.state.values()]
    for name in (torch_adv, torch_clean):
      memory[name] = harness.torch_bytes(calls[name], [list(net.parameters()), momentum, x, y], dev)
      flops[name] = harness.torch_flops(calls[name])

  step_rows = base.rows(
      {k: timings[k] for k in (clean, adversarial)}, clean, memory=memory, notes=notes, flops=flops
  )
  item1 = base.Section(
      f"1. Adversarial train step vs clean (maxout {cfg.units}x{cfg.pieces}, batch {cfg.batch})",
      "median time over the advjax clean step's",
      "adversarial / clean <= 1.8",
      step_rows,
  )
  base.judge(item1, step_rows[1].ratio, 1.8, at_most=True, text="{:.2f}x")
  work = (
      f"{flops[adversarial] / flops[clean]:.2f}x"
      if flops[clean] and flops[adversarial]
      else "unknown"
  )
  item1.notes.append(
      "The adversarial step is 2 forward passes (XLA merges the attack's with the clean "
      "term's) and 3 backward passes (to the input for the attack, to the parameters for "
      f"each term): its optimized program holds {dots[adversarial]} matrix products against "
      f"the clean step's {dots[clean]}, and XLA counts {work} its work (FLOPs), the floor "
      "of the time ratio where the products dominate, as on a CPU."
  )

  torch_names = [adversarial] + ([torch_adv, torch_clean] if torch_peer.available else [])
  torch_rows = base.rows(
      {k: timings[k] for k in torch_names}, adversarial, memory=memory, notes=notes, flops=flops
  )
  if not torch_peer.available:
    torch_rows += [base.missing(torch_adv, torch_peer), base.missing(torch_clean, torch_peer)]
  item2 = base.Section(
      f"2. Adversarial train step: advjax vs PyTorch eager ({bench.torch_device or 'no torch'})",
      "median time over advjax's adversarial step's (above 1: advjax is faster)",
      "PyTorch / advjax >= 1.5",
      torch_rows,
  )
  if torch_peer.available:
    base.judge(item2, torch_rows[1].ratio, 1.5, at_most=False, text="{:.2f}x")
    item2.notes.append(
        "PyTorch's own adversarial / clean ratio: "
        f"{timings[torch_adv].median / timings[torch_clean].median:.2f}x."
    )
  return [item1, item2]


def _dot_count(jitted: Any, *args: Any) -> int:
  """Matrix products in XLA's optimized program for these arguments (cached compile)."""
  return len(re.findall(r"\bdot\(", jitted.lower(*args).compile().as_text()))


ITEM = base.Item(("adversarial_step", "vs_pytorch"), train_steps)
