"""Maxout networks on MNIST, clean and adversarially trained: sections 4 and 6 of the paper.

Trains a maxout network with the plain loss and one with the adversarial
objective of eq. (6) (alpha and eps from the preset: 0.5 and 0.25), every
seed of each as one vmapped population, then scores both on the 10,000 test
images: clean error, error under FGSM (no clipping) and mean confidence on
those mistakes, the transfer of FGSM examples from each model to the other
(rows M3 to M6 of the paper), and, beyond the paper, each model under
stronger attacks (`experiments.maxout.audit`).

    python -m experiments.mnist_maxout                      # quick: ~9 min on 2 CPU cores
    python -m experiments.mnist_maxout --preset long        # the protocol on 2 cores
    python -m experiments.mnist_maxout --preset paper240    # the paper's protocol: a GPU job
    python -m experiments.mnist_maxout --data-dir ../shared/data/mnist --out results

Writes to OUT (``runs/`` by default), as ``mnist_maxout`` for the quick
preset and ``mnist_maxout_<preset>`` for the others:

- ``<name>.json``: ``models`` (``clean`` and ``adversarial``, each with
  ``test_error``, ``test_confidence``, ``fgsm_error``, ``fgsm_confidence``
  averaged over seeds, ``per_seed`` and the selection's validation
  ``curves``), ``transfer`` (``clean_to_adversarial``: FGSM examples made on
  the clean model, error of the adversarial one on them;
  ``adversarial_to_clean``; ``per_seed``), ``audit`` (the stronger attacks,
  per model), ``rows`` (the paper's numbers beside ours, MNIST only),
  ``config`` and ``seconds``. Errors and confidences are fractions; a
  confidence without mistakes is null.
- ``<name>_params.npz``: seed 0's parameters, keyed ``clean/<param path>``
  and ``adversarial/<param path>`` (e.g. ``clean/maxout_0/kernel``), for the
  experiments that reuse the pair.
- ``figures/<name>_validation.png``: the validation curves, for presets that
  validate (with matplotlib installed).

Every epoch is checkpointed under the work folder (``OUT/mnist_maxout_runs``
by default): the same command run again after an interruption resumes from
the last finished epoch, and after completion only re-evaluates.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from advjax import data as data_lib
from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import objectives
from advjax import sharding
from experiments import cli
from experiments import files
from experiments import maxout
from experiments import numeric
from experiments import paper
from experiments import robustness
from experiments import runner
from experiments import training
from experiments import verdicts

NAME = "mnist_maxout"
PROG = f"experiments.{NAME}"
TEST_EXAMPLES_NOTE = "binomial standard error on the 10,000 test images"


def results_name(preset_name: str) -> str:
  """``mnist_maxout`` for the default preset, ``mnist_maxout_<preset>`` for the others."""
  return NAME if preset_name == "quick" else f"{NAME}_{preset_name}"


def measure_seed(
    model: models.Classifier, params: dict[str, Any], eps: float, test: Any
) -> tuple[dict[str, Any], dict[str, float]]:
  """Both models of one seed on the test set: ``(scores per model, transfer)``."""
  scores, examples = {}, {}
  for name in maxout.MODEL_NAMES:
    error, confidence = evaluation.score(model, params[name], test.x, test.y)
    # Made on the evaluation loss (dropout off), kept for the transfer.
    examples[name] = evaluation.fgsm_examples(model, params[name], test.x, test.y, eps)
    fgsm_error, fgsm_confidence = evaluation.score(model, params[name], examples[name], test.y)
    scores[name] = {
        "test_error": error,
        "test_confidence": numeric.number(confidence),
        "fgsm_error": fgsm_error,
        "fgsm_confidence": numeric.number(fgsm_confidence),
    }
    print(
        f"  {name}: test error {numeric.percent(error, 2)}, FGSM error "
        f"{numeric.percent(fgsm_error)}",
        flush=True,
    )
  transfer = {
      "clean_to_adversarial": evaluation.score(
          model, params["adversarial"], examples["clean"], test.y
      )[0],
      "adversarial_to_clean": evaluation.score(
          model, params["clean"], examples["adversarial"], test.y
      )[0],
  }
  return scores, transfer


def standard_error(p: float, q: float, n: int) -> float:
  """The binomial standard error of the difference of two error rates on ``n`` examples."""
  return math.sqrt((p * (1 - p) + q * (1 - q)) / n)


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows M3 to M6 from the measured ``models`` and ``transfer``.

  M3, M4 and M6 are the paper's 240-unit (M3, M4) and 1600-unit (M6) models;
  a smaller or shorter run still measures them, and says so in the note. M5
  needs the paper's protocol (1600 units, early stopping, retraining, five
  seeds) and is reported only for a 1600-unit run.
  """
  clean, adversarial = results["models"]["clean"], results["models"]["adversarial"]
  transfer, config = results["transfer"], results["config"]
  difference = adversarial["test_error"] - clean["test_error"]
  se = standard_error(clean["test_error"], adversarial["test_error"], results["test_examples"])
  scale = (
      f"preset {config['preset']}: {config['units']} units, "
      f"{config['epochs']}/{config['adversarial_epochs'] or config['epochs']} "
      f"epochs (clean/adversarial{', most' if config['patience'] else ''}), "
      f"{config['seeds']} seed(s); clean test errors "
      f"{numeric.percent(clean['test_error'], 2)} (clean), "
      f"{numeric.percent(adversarial['test_error'], 2)} (adversarial), "
      f"difference {100 * difference:+.2f} +- {100 * se:.2f} points "
      f"({TEST_EXAMPLES_NOTE})"
  )
  better = difference < 0
  robust = adversarial["fgsm_error"] < clean["fgsm_error"]
  asymmetric = transfer["adversarial_to_clean"] > transfer["clean_to_adversarial"]
  clean_learnt = verdicts.learnt(clean["test_error"])
  both = clean_learnt and verdicts.learnt(adversarial["test_error"])
  clean_conf, adversarial_conf = clean["fgsm_confidence"], adversarial["fgsm_confidence"]
  compare = lambda key, measured, tolerance, claim, trained: verdicts.row(
      key, measured, tolerance, claim, scale, trained=trained
  )
  result = [
      compare("M3.fgsm_error", clean["fgsm_error"], 0.10, clean["fgsm_error"] >= 0.5, clean_learnt),
      compare("M3.fgsm_confidence", clean_conf, 0.10, (clean_conf or 0) >= 0.5, clean_learnt),
      compare("M4.clean_test_error", clean["test_error"], 0.003, clean_learnt, True),
      # Within tolerance of 0.84% but above the clean model is no improvement.
      compare(
          "M4.adversarial_test_error", adversarial["test_error"], 0.003, better, both and better
      ),
      compare("M6.fgsm_error", adversarial["fgsm_error"], 0.10, robust, both),
      compare(
          "M6.fgsm_confidence",
          adversarial_conf,
          0.10,
          (adversarial_conf or 1) < (clean_conf or 1),
          both,
      ),
      compare("M6.clean_to_adversarial", transfer["clean_to_adversarial"], 0.10, asymmetric, both),
      compare("M6.adversarial_to_clean", transfer["adversarial_to_clean"], 0.10, asymmetric, both),
  ]
  if config["units"] == 1600:
    result += [
        compare("M5.clean_test_error", clean["test_error"], 0.003, clean_learnt, clean_learnt),
        compare(
            "M5.adversarial_test_error", adversarial["test_error"], 0.003, better, both and better
        ),
    ]
  return result


def format_table(results: dict[str, Any]) -> str:
  """The measured numbers, beside the paper's for an MNIST run, as plain text."""
  clean, adversarial = results["models"]["clean"], results["models"]["adversarial"]
  transfer, config, audit = results["transfer"], results["config"], results["audit"]
  figure = lambda key: paper.FIGURES[key].printed
  lines = [
      (
          "clean maxout",
          "test error",
          clean["test_error"],
          f"{figure('M4.clean_test_error')} (M4, 240 units); "
          f"{figure('M5.clean_test_error')} (M5, 1600)",
      ),
      ("", "FGSM error", clean["fgsm_error"], f"{figure('M3.fgsm_error')} (M3, M6)"),
      (
          "",
          "confidence on FGSM mistakes",
          clean["fgsm_confidence"],
          f"{figure('M3.fgsm_confidence')} (M3)",
      ),
      (
          "adversarial maxout",
          "test error",
          adversarial["test_error"],
          f"{figure('M4.adversarial_test_error')} (M4, 240 units); "
          f"{figure('M5.adversarial_test_error')} (M5, 1600)",
      ),
      ("", "FGSM error", adversarial["fgsm_error"], f"{figure('M6.fgsm_error')} (M6)"),
      (
          "",
          "confidence on FGSM mistakes",
          adversarial["fgsm_confidence"],
          f"{figure('M6.fgsm_confidence')} (M6)",
      ),
      (
          "transfer",
          "clean -> adversarial",
          transfer["clean_to_adversarial"],
          f"{figure('M6.clean_to_adversarial')} (M6)",
      ),
      (
          "",
          "adversarial -> clean",
          transfer["adversarial_to_clean"],
          f"{figure('M6.adversarial_to_clean')} (M6)",
      ),
  ]
  for name in maxout.MODEL_NAMES:
    attacks = audit[name]
    lines += [
        (f"{name} maxout" if i == 0 else "", metric, value, "beyond the paper")
        for i, (metric, value) in enumerate(
            [(f"PGD error, eps {radius}", error) for radius, error in attacks["pgd"].items()]
            + [
                ("FGSM error, predicted labels", attacks["fgsm_predicted_labels"]),
                (
                    f"worst FGSM error (eps {attacks['worst_fgsm']['eps']:.3g})",
                    attacks["worst_fgsm"]["error"],
                ),
            ]
        )
    ]
  with_paper = verdicts.comparable(config["dataset"])
  out = [
      runner.title(config["dataset"], config["preset"], config["seeds"], config["eps"])
      + f"; {config['units']} units",
      f"{'':52}{'ours':>8}" + ("   paper" if with_paper else ""),
  ]
  out += [
      f"{model:20}{metric:32}{numeric.percent(value, 2):>8}"
      + (f"   {reference}" if with_paper else "")
      for model, metric, value, reference in lines
  ]
  out.append("transfer X -> Y: FGSM examples made on X, error of Y on them.")
  return "\n".join(out)


def draw_curves(path: pathlib.Path, curves: dict[str, dict[str, list[Any]]]) -> bool:
  """Draws seed 0's validation curves of both models; False without matplotlib."""
  try:
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  figure = Figure(figsize=(10, 4), layout="constrained")
  for axes, key, label in zip(
      figure.subplots(1, 2),
      ("valid_error", "valid_fgsm_error"),
      ("clean validation error", "FGSM validation error"),
  ):
    for name, curve in curves.items():
      axes.plot(
          curve["epoch"],
          [100 * (v if v is not None else float("nan")) for v in curve[key]],
          label=f"{name} maxout",
      )
    axes.set_xlabel("epoch (selection on the first 50,000 images)")
    axes.set_ylabel(f"{label} (%)")
    axes.set_yscale("log")
    axes.legend()
  files.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
  return True


def device_mesh(devices: str) -> Mesh | None:
  """The mesh that ``--devices`` asks for: None for one device, else a data mesh."""
  if devices == "all":
    count = jax.device_count()
  elif devices.isdigit() and int(devices) >= 1:
    count = int(devices)
  else:
    cli.fail(PROG, f"--devices must be a count >= 1 or 'all', got {devices!r}")
  if count > jax.device_count():
    cli.fail(
        PROG,
        f"--devices {count}: only {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s) here (on a CPU, "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)",
    )
  batch = loop.TrainConfig.batch_size  # the recipe's 100, which every preset keeps
  if batch % count:
    cli.fail(PROG, f"--devices {count} does not divide the batch of {batch}")
  return None if count == 1 and jax.process_count() == 1 else sharding.data_mesh(count)


def train_pair(
    preset: maxout.Preset, data: data_lib.MNIST, work: pathlib.Path, mesh: Mesh | None
) -> dict[str, list[training.Trained]]:
  """Both models of every seed: ``{"clean": [...], "adversarial": [...]}``."""
  adversarial = objectives.Adversarial(preset.eps, preset.alpha)
  return {
      "clean": maxout.train("clean", objectives.Clean(), "error", preset, data, work, mesh=mesh),
      "adversarial": maxout.train(
          "adversarial", adversarial, "fgsm_error", preset, data, work, mesh=mesh
      ),
  }


def measure(
    preset: maxout.Preset, data: data_lib.MNIST, trained: dict[str, list[training.Trained]]
) -> dict[str, Any]:
  """Scores both models of every seed on the test set: ``models``, ``transfer``, ``audit``."""
  model = models.maxout_mlp(units=preset.units)
  per_seed = {name: [] for name in maxout.MODEL_NAMES}
  transfers, audits = [], {name: [] for name in maxout.MODEL_NAMES}
  for seed in range(preset.seeds):
    params = {name: trained[name][seed].params for name in maxout.MODEL_NAMES}
    print(f"seed {seed}:", flush=True)
    scores, transfer = measure_seed(model, params, preset.eps, data.test)
    for name in maxout.MODEL_NAMES:
      per_seed[name].append({**scores[name], **trained[name][seed].summary})
      audits[name].append(
          maxout.audit(model, params[name], data.test, preset, jax.random.key(seed))
      )
    transfers.append({"seed": seed, **transfer})
  keys = ("test_error", "test_confidence", "fgsm_error", "fgsm_confidence")
  return {
      "models": {
          name: {
              **{k: numeric.mean([r[k] for r in rows]) for k in keys},
              "per_seed": rows,
              "curves": [t.curve for t in trained[name]],
          }
          for name, rows in per_seed.items()
      },
      "transfer": {
          **{
              k: numeric.mean([t[k] for t in transfers])
              for k in ("clean_to_adversarial", "adversarial_to_clean")
          },
          "per_seed": transfers,
      },
      "audit": {name: _mean_audit(runs) for name, runs in audits.items()},
      "test_examples": len(data.test.y),
  }


def _mean_audit(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """The seeds' audits averaged (the worst eps: seed 0's), with every seed's kept."""
  mean = {
      "pgd": {radius: numeric.mean([r["pgd"][radius] for r in runs]) for radius in runs[0]["pgd"]},
      "fgsm_predicted_labels": numeric.mean([r["fgsm_predicted_labels"] for r in runs]),
      "worst_fgsm": {
          "error": numeric.mean([r["worst_fgsm"]["error"] for r in runs]),
          "eps": runs[0]["worst_fgsm"]["eps"],
      },
      "per_seed": runs,
  }
  if "autoattack" in runs[0]:
    attacks = [r["autoattack"] for r in runs]
    mean["autoattack"] = {
        "eps": attacks[0]["eps"],
        "n": attacks[0]["n"],
        "robust_accuracy": [
            numeric.mean(list(values)) for values in zip(*(a["robust_accuracy"] for a in attacks))
        ],
        "flagged": any(a["flags"]["any"] for a in attacks),
    }
  return mean


def run(
    preset: maxout.Preset, data: data_lib.MNIST, out: pathlib.Path, args: argparse.Namespace
) -> dict[str, Any]:
  """Trains and scores both models of every seed; writes seed 0's pair and its curves."""
  mesh = device_mesh(args.devices)
  work = args.work or out / f"{NAME}_runs"
  trained = train_pair(preset, data, work, mesh)
  results = measure(preset, data, trained)
  results["config"] = {
      "work": str(work),
      "devices": 1 if mesh is None else mesh.size,
      "platform": jax.devices()[0].platform,
  }
  # Every host computes the same results; one writes them.
  if jax.process_index() == 0:
    name = results_name(args.preset)
    maxout.save_params(
        out / f"{name}_params.npz", {n: trained[n][0].params for n in maxout.MODEL_NAMES}
    )
    curves = {n: results["models"][n]["curves"][0] for n in maxout.MODEL_NAMES}
    figures = {}
    if all(curve for curve in curves.values()):
      figure = pathlib.Path("figures") / f"{name}_validation.png"
      if draw_curves(out / figure, curves):
        figures["validation curves"] = figure.as_posix()
    attacks = {
        f"{n} maxout": results["audit"][n]["per_seed"][0].get("autoattack")
        for n in maxout.MODEL_NAMES
    }
    curve = robustness.curve_figure(attacks) if all(attacks.values()) else None
    if curve is not None:
      figures["AutoAttack robust accuracy against eps"] = files.save_figure(
          curve, out, f"{name}_autoattack"
      )
    if figures:
      results["figures"] = figures
  return results


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The flags beyond every experiment's: the network's size, the work folder, the devices."""
  parser.add_argument("--units", type=int, help="maxout units per layer")
  parser.add_argument(
      "--epochs", type=int, help="epochs of both models (the most, with early stopping)"
  )
  parser.add_argument(
      "--autoattack",
      type=int,
      help="test images AutoAttack attacks in the audit, 0 to skip it (default: the "
      "preset's, 1,000)",
  )
  parser.add_argument(
      "--work",
      type=pathlib.Path,
      help="checkpoint folder; the same command resumes from it "
      "(default: OUT/mnist_maxout_runs)",
  )
  parser.add_argument(
      "--devices",
      default="1",
      help="train data-parallel over this many devices, or 'all' "
      "(default: 1); the batch of 100 must split evenly",
  )
  parser.add_argument(
      "--distributed",
      action="store_true",
      help="join a multi-host run (jax.distributed.initialize); implied by --coordinator",
  )
  parser.add_argument("--coordinator", help="multi-host: host 0's address, host:port")
  parser.add_argument("--num-processes", type=int, help="multi-host: number of hosts")
  parser.add_argument("--process-id", type=int, help="multi-host: this host's index")


def prepare(args: argparse.Namespace, preset: maxout.Preset) -> maxout.Preset:
  """``--units``, ``--epochs`` (both models') and ``--autoattack`` applied, the hosts joined,
  ``--devices`` checked."""
  for flag in ("units", "epochs"):
    value = cli.positive(PROG, flag, getattr(args, flag))
    if value is not None:
      preset = dataclasses.replace(preset, **{flag: value})
  if args.autoattack is not None:
    if args.autoattack < 0:
      cli.fail(PROG, f"--autoattack must be >= 0 test images, got {args.autoattack}")
    preset = dataclasses.replace(preset, autoattack_subset=args.autoattack)
  if args.epochs is not None:
    preset = dataclasses.replace(preset, adversarial_epochs=None)
  if args.distributed or args.coordinator:
    sharding.initialize_distributed(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
  device_mesh(args.devices)
  return preset


EXPERIMENT = runner.Experiment(
    NAME,
    "Clean and adversarially trained maxout networks on MNIST "
    "(Goodfellow et al. 2015, sections 4 and 6).",
    maxout.PRESETS,
    run,
    rows=rows,
    alpha=True,
    flags=add_flags,
    prepare=prepare,
    results_name=results_name,
    table=format_table,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
