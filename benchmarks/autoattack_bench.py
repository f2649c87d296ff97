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
import functools
import json
import pathlib
import platform
import time
from typing import Any

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

  Each runs, as torchattacks' does, on the points still robust only
  (`advjax.attack_robust`); the targeted ones against the 9 classes ranked
  2nd, 3rd, ... by the clean logits, in turn.
  """
  logits_fn = model.scores

  def alone(attack, targets):
    def run(params, x, y, eps, key):
      logits = logits_fn(params, x)
      ranked = jnp.argsort(logits, axis=1)

      def one(robust, rank):
        target = jnp.take(ranked, ranked.shape[1] - 1 - rank, axis=1)
        broken, _ = advjax.attack_robust(
            functools.partial(attack, params),
            logits_fn,
            params,
            x,
            y,
            eps,
            robust,
            target=target,
            key=jax.random.fold_in(key, rank),
        )
        return robust & ~broken, None

      ranks = jnp.arange(1, 1 + targets) if targets else jnp.zeros(1, int)
      return jax.lax.scan(one, jnp.argmax(logits, axis=1) == y, ranks)[0]

    return jax.jit(run)

  def apgd_ce(params, x, y, target, eps, key):
    del target
    return advjax.apgd(logits_fn, params, x, y, eps, objective=advjax.cross_entropy, key=key)

  def apgd_t(params, x, y, target, eps, key):
    objective = functools.partial(advjax.targeted_dlr_loss, target=target)
    return advjax.apgd(logits_fn, params, x, y, eps, objective=objective, key=key)

  def fab_t(params, x, y, target, eps, key):
    del key
    return advjax.fab_targeted(logits_fn, params, x, y, eps, target=target)

  def square(params, x, y, target, eps, key):
    del target
    return advjax.square(logits_fn, params, x, y, eps, key=key, image_shape=IMAGE)

  def autoattack(params, x, y, eps, key):
    return advjax.autoattack(logits_fn, params, x, y, eps, key=key, image_shape=IMAGE).robust

  return {
      "apgd-ce": alone(apgd_ce, 0),
      "apgd-t": alone(apgd_t, 9),
      "fab-t": alone(fab_t, 9),
      "square": alone(square, 0),
      "autoattack": jax.jit(autoattack),
  }


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=1000, help="MNIST test images")
  parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3])
  parser.add_argument("--curve", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
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
  clean = float(jnp.mean(jnp.argmax(model.scores(params, xj), 1) == yj))
  with torch.no_grad():
    torch_clean = float((net(torch.from_numpy(x.copy())).argmax(1).numpy() == y).mean())
  ours = advjax_attacks(model)

  fidelity = []
  compile_seconds = {}
  for eps in args.eps:
    theirs = torch_autoattack.attacks(net, eps)
    for name in ATTACK_NAMES:
      if name not in compile_seconds:
        begin = time.perf_counter()
        ours[name] = ours[name].lower(params, xj, yj, jnp.float32(eps), key).compile()
        compile_seconds[name] = time.perf_counter() - begin
      robust, seconds = timed(ours[name], params, xj, yj, jnp.float32(eps), key)
      start = time.perf_counter()
      reference = torch_autoattack.robust(net, theirs[name], x, y)
      fidelity.append(
          {
              "attack": name,
              "eps": eps,
              "advjax": float(np.mean(robust)),
              "torchattacks": float(np.mean(reference)),
              "advjax_s": seconds,
              "torchattacks_s": time.perf_counter() - start,
          }
      )
      print(fidelity[-1], flush=True)

  timing_eps = args.eps[0]
  shipped = torch_autoattack.shipped(net, timing_eps)
  start = time.perf_counter()
  shipped_robust = torch_autoattack.robust(net, shipped, x, y)
  shipped_seconds = time.perf_counter() - start
  ours_aa = [row for row in fidelity if row["attack"] == "autoattack" and row["eps"] == timing_eps]
  speed = {
      "eps": timing_eps,
      "advjax_compile_s": compile_seconds["autoattack"],
      "advjax_s": ours_aa[0]["advjax_s"],
      "torchattacks_reference_settings_s": ours_aa[0]["torchattacks_s"],
      "torchattacks_shipped_s": shipped_seconds,
      "torchattacks_shipped_robust_accuracy": float(np.mean(shipped_robust)),
  }

  eps_values = jnp.asarray(args.curve, jnp.float32)

  def curve_fn(params, eps_values):
    return advjax.autoattack_curve(
        model.scores, params, xj, yj, eps_values, key=key, image_shape=IMAGE
    ).robust

  begin = time.perf_counter()
  curve = jax.jit(curve_fn).lower(params, eps_values).compile()
  curve_compile = time.perf_counter() - begin
  together, vmapped_seconds = timed(curve, params, eps_values)
  sequential_seconds = 0.0
  for k, eps in enumerate(args.curve):
    alone, seconds = timed(ours["autoattack"], params, xj, yj, jnp.float32(eps), key)
    sequential_seconds += seconds
    assert np.array_equal(np.asarray(alone), np.asarray(together[k])), eps
  report = {
      "machine": f"{platform.processor() or platform.machine()}, CPU, jax {jax.__version__}, "
      f"torch {torch.__version__}, torchattacks {torchattacks.__version__}",
      "n": args.n,
      "train": {"epochs": args.epochs, "fgsm_eps": args.train_eps, "seconds": train_seconds},
      "clean_accuracy": {"advjax": clean, "torch": torch_clean},
      "fidelity": fidelity,
      "compile_s": compile_seconds,
      "speed": speed,
      "curve": {
          "eps": args.curve,
          "robust_accuracy": np.mean(np.asarray(together), axis=1).tolist(),
          "vmapped_s": vmapped_seconds,
          "vmapped_compile_s": curve_compile,
          "sequential_s": sequential_seconds,
          "ratio": vmapped_seconds / sequential_seconds,
      },
  }
  pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
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
  speed, curve = report["speed"], report["curve"]
  lines += [
      "",
      f"AutoAttack standard at eps {speed['eps']}: advjax {speed['advjax_s']:.1f} s "
      f"(+ {speed['advjax_compile_s']:.1f} s compile); torchattacks with the reference's settings "
      f"{speed['torchattacks_reference_settings_s']:.1f} s "
      f"({speed['torchattacks_reference_settings_s'] / speed['advjax_s']:.2f}x), "
      f"torchattacks.AutoAttack as shipped {speed['torchattacks_shipped_s']:.1f} s "
      f"({speed['torchattacks_shipped_s'] / speed['advjax_s']:.2f}x, robust acc "
      f"{100 * speed['torchattacks_shipped_robust_accuracy']:.1f}).",
      f"Curve over eps {curve['eps']}: vmapped {curve['vmapped_s']:.1f} s, "
      f"{len(curve['eps'])} separate calls {curve['sequential_s']:.1f} s, "
      f"ratio {curve['ratio']:.2f}.",
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
