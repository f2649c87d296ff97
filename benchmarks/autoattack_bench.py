"""AutoAttack benchmark: advjax against torchattacks 3.5.1 on the same maxout weights.

Trains a 240-unit maxout on MNIST (FGSM adversarial training, a few epochs:
quick, and robust enough at eps 0.1 for the comparison to mean something),
copies its weights into PyTorch (`benchmarks.torch_maxout`), then on the first
``n`` test images:

1. fidelity: each attack's robust accuracy alone, advjax against torchattacks
   with the same settings (APGD-CE and APGD-T with 100 steps, FAB-T with 100
   steps, 9 targets, Square with 5,000 queries on AutoAttack's unrescaled
   schedule), and the whole standard AutoAttack, at each eps;
2. speed: AutoAttack standard, advjax (jit; compilation timed apart) against
   torchattacks' ``AutoAttack`` as shipped (whose APGD and FAB run 10 steps,
   not the reference's 100) and against torchattacks' attacks with the
   reference's settings in its ``MultiAttack``, on the same CPU in one run;
3. the K-eps curve: one vmapped program against K separate calls.

Run ``python -m benchmarks.autoattack_bench`` (``--help`` for the knobs); it
writes ``benchmarks/autoattack_bench.json`` and prints a table. Needs torch and
torchattacks (``pip install --no-deps torchattacks==3.5.1``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import advjax
from advjax import data as data_lib
from advjax import loop
from advjax import models
from advjax import train

ATTACK_NAMES = ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
IMAGE = (28, 28, 1)


def trained_maxout(data: Any, *, epochs: int, train_eps: float, seed: int) -> tuple[Any, Any]:
  """A 240x5 maxout trained with the paper's FGSM objective for ``epochs`` epochs."""
  model = models.maxout_mlp()
  config = loop.TrainConfig(epochs=epochs, seed=seed)
  result = loop.fit(
      model, data.train, config, objective=train.Adversarial(eps=train_eps), progress=False
  )
  return model, result.params


def advjax_attacks(model: Any) -> dict[str, Any]:
  """Jitted ``(params, x, y, eps, key) -> robust mask`` for each attack alone, advjax's.

  Each of `advjax.standard_attacks` runs, as torchattacks' does, on the points
  still robust only (`advjax.attack_robust`); the targeted ones against the 9
  classes ranked 2nd, 3rd, ... by the clean logits, in turn.
  """
  logits_fn = model.scores

  def alone(name, targets):
    def run(params, x, y, eps, key):
      attack = advjax.standard_attacks(logits_fn, params, image_shape=IMAGE)[name]
      logits = logits_fn(params, x)
      ranked = jnp.argsort(logits, axis=1)

      def one(robust, rank):
        target = jnp.take(ranked, ranked.shape[1] - 1 - rank, axis=1)
        key_rank = jax.random.fold_in(key, rank)
        broken, _ = advjax.attack_robust(
            attack, logits_fn, params, x, y, eps, robust, target=target, key=key_rank
        )
        return robust & ~broken, None

      ranks = jnp.arange(1, 1 + targets) if targets else jnp.zeros(1, int)
      return jax.lax.scan(one, jnp.argmax(logits, axis=1) == y, ranks)[0]

    return jax.jit(run)

  def autoattack(params, x, y, eps, key):
    return advjax.autoattack(logits_fn, params, x, y, eps, key=key, image_shape=IMAGE).robust

  targets = {"apgd-ce": 0, "apgd-t": 9, "fab-t": 9, "square": 0}
  return {
      **{name: alone(name, n) for name, n in targets.items()},
      "autoattack": jax.jit(autoattack),
  }


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


class Inputs(NamedTuple):
  """One run's model and images, on both sides."""

  params: Any
  x: jax.Array
  y: jax.Array
  x_np: np.ndarray
  y_np: np.ndarray
  net: Any
  key: jax.Array


def fidelity_row(
    report: dict[str, Any], ours: dict[str, Any], theirs: Any, name: str, eps: float, inputs: Inputs
) -> dict[str, Any]:
  """One attack at one eps on both sides: robust accuracies and seconds (compiling ours first)."""
  from benchmarks import torch_autoattack

  args = (inputs.params, inputs.x, inputs.y, jnp.float32(eps), inputs.key)
  if name not in report["compile_s"]:
    begin = time.perf_counter()
    ours[name] = ours[name].lower(*args).compile()
    report["compile_s"][name] = time.perf_counter() - begin
  robust, seconds = timed(ours[name], *args)
  start = time.perf_counter()
  reference = torch_autoattack.robust(inputs.net, theirs, inputs.x_np, inputs.y_np)
  return {
      "attack": name,
      "eps": eps,
      "advjax": float(np.mean(robust)),
      "torchattacks": float(np.mean(reference)),
      "advjax_s": seconds,
      "torchattacks_s": time.perf_counter() - start,
  }


def shipped_speed(report: dict[str, Any], net: Any, x: Any, y: Any, eps: float) -> dict[str, Any]:
  """torchattacks' AutoAttack as shipped at ``eps``, beside the AutoAttack rows already run."""
  from benchmarks import torch_autoattack

  start = time.perf_counter()
  shipped_robust = torch_autoattack.robust(net, torch_autoattack.shipped(net, eps), x, y)
  shipped_seconds = time.perf_counter() - start
  ours = [row for row in report["fidelity"] if row["attack"] == "autoattack" and row["eps"] == eps]
  return {
      "eps": eps,
      "advjax_compile_s": report["compile_s"]["autoattack"],
      "advjax_s": ours[0]["advjax_s"],
      "torchattacks_reference_settings_s": ours[0]["torchattacks_s"],
      "torchattacks_shipped_s": shipped_seconds,
      "torchattacks_shipped_robust_accuracy": float(np.mean(shipped_robust)),
  }


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=1000, help="MNIST test images")
  parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3])
  parser.add_argument(
      "--attacks",
      nargs="+",
      choices=ATTACK_NAMES,
      default=list(ATTACK_NAMES),
      help="the attacks to run, each on both sides (default: all, then torchattacks' shipped "
      "AutoAttack where autoattack is among them)",
  )
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--train-eps", type=float, default=0.1)
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--out", default="benchmarks/autoattack_bench.json")
  args = parser.parse_args(argv)
  import torch
  import torchattacks

  from benchmarks import torch_autoattack

  data = data_lib.load_mnist(args.data_dir)
  x, y = data.test.x[: args.n], data.test.y[: args.n]
  start = time.perf_counter()
  model, params = trained_maxout(data, epochs=args.epochs, train_eps=args.train_eps, seed=0)
  train_seconds = time.perf_counter() - start
  net = torch_autoattack.maxout_net(model, params)
  key = jax.random.key(0)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  inputs = Inputs(params, xj, yj, x, y, net, key)
  clean = float(jnp.mean(jnp.argmax(model.scores(params, xj), 1) == yj))
  with torch.no_grad():
    torch_clean = float((net(torch.from_numpy(x.copy())).argmax(1).numpy() == y).mean())
  ours = advjax_attacks(model)

  report = {
      "machine": f"{platform.processor() or platform.machine()}, CPU, jax {jax.__version__}, "
      f"torch {torch.__version__}, torchattacks {torchattacks.__version__}",
      "n": args.n,
      "train": {"epochs": args.epochs, "fgsm_eps": args.train_eps, "seconds": train_seconds},
      "clean_accuracy": {"advjax": clean, "torch": torch_clean},
      "fidelity": [],
      "compile_s": {},
  }
  out = pathlib.Path(args.out)
  for eps in args.eps:
    theirs = torch_autoattack.attacks(net, eps)
    for name in args.attacks:
      report["fidelity"].append(fidelity_row(report, ours, theirs[name], name, eps, inputs))
      print(report["fidelity"][-1], flush=True)
      out.write_text(json.dumps(report, indent=2) + "\n")  # a stopped run keeps its rows
  if "autoattack" in args.attacks:
    report["speed"] = shipped_speed(report, net, x, y, args.eps[0])
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(table(report))
  return report


def table(report: dict[str, Any]) -> str:
  """The benchmark's results as markdown tables."""
  lines = [
      f"n = {report['n']} MNIST test images; "
      f"clean accuracy {report['clean_accuracy']['advjax']:.3f}",
      "",
      "| attack | eps | advjax robust acc | torchattacks | advjax s | torchattacks s |",
      "|---|---|---|---|---|---|",
  ]
  for row in report["fidelity"]:
    lines.append(
        f"| {row['attack']} | {row['eps']} | {100 * row['advjax']:.1f} | "
        f"{100 * row['torchattacks']:.1f} | {row['advjax_s']:.1f} | {row['torchattacks_s']:.1f} |"
    )
  if "speed" not in report:
    return "\n".join(lines)
  speed = report["speed"]
  lines += [
      "",
      f"AutoAttack standard at eps {speed['eps']}: advjax {speed['advjax_s']:.1f} s "
      f"(+ {speed['advjax_compile_s']:.1f} s compile); torchattacks with the reference's settings "
      f"{speed['torchattacks_reference_settings_s']:.1f} s "
      f"({speed['torchattacks_reference_settings_s'] / speed['advjax_s']:.2f}x), "
      f"torchattacks.AutoAttack as shipped {speed['torchattacks_shipped_s']:.1f} s "
      f"({speed['torchattacks_shipped_s'] / speed['advjax_s']:.2f}x, robust acc "
      f"{100 * speed['torchattacks_shipped_robust_accuracy']:.1f}).",
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
