"""How a maxout network answers as eps grows: Fig. 4, error against eps, and Fig. 3.

Three figures of the paper from one pair of maxout networks, a clean one and
an adversarially trained one (alpha 0.5, eps 0.25):

- Fig. 4 (row F4): the clean maxout's logits at ``x + eps * sign(grad_x J)``
  as eps sweeps through ``[-eps_max, eps_max]`` (`advjax.direction_sweep`).
  The paper sees nearly straight lines, and wrong classes over broad ranges
  of eps. We measure both on the first test images: the mean R^2 of a
  straight line fitted to each logit on each side of eps = 0, and the
  fraction of ``eps in (0, eps_max]`` at which the image is misclassified.
- Error against eps for every model: `advjax.epsilon_sweep` of both maxouts
  on the test set, through the `LinearFirst` fast path, drawn on one plot
  with the ``sweep`` entry of every other ``OUT/*.json``. Run this script
  after the others; a missing one is left out with a printed note.
- Fig. 3: the first-layer weights of both maxouts side by side, one row per
  maxout unit, one column per piece. The paper finds the adversarially
  trained weights "more localized and interpretable"; our proxy is the mean
  participation ratio of a filter, ``(sum w^2)^2 / (784 sum w^4)``: the
  fraction of pixels a filter effectively uses, smaller when localized.

The maxouts are those of ``experiments.mnist_maxout`` when it has left
``OUT/mnist_maxout_params.npz`` (seed 0, keys ``clean/<param path>`` and
``adversarial/<param path>``, e.g. ``clean/maxout_0/kernel``); otherwise the
preset trains a small pair here, checkpointed under ``OUT/epsilon_sweep_runs``.

    python -m experiments.epsilon_sweep --data-dir ../shared/data/mnist --out results

Writes ``OUT/epsilon_sweep.json`` and three PNGs in ``OUT/figures``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

import advjax
from advjax import data as data_lib
from advjax import models
from advjax import objectives
from experiments import curves
from experiments import files
from experiments import maxout
from experiments import numeric
from experiments import paper
from experiments import runner
from experiments import verdicts

NAME = "epsilon_sweep"
PARAMS_FILE = "mnist_maxout_params.npz"


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of the figures, and of the maxouts trained when none is given.

  Attributes:
    maxout: how to train the pair here (an `experiments.maxout.Preset`), used
      only without ``OUT/mnist_maxout_params.npz``.
    eps_max: Fig. 4 sweeps eps through ``[-eps_max, eps_max]``.
    points: number of eps values of Fig. 4's sweep.
    examples: test images whose sweeps give Fig. 4's numbers (the first one
      the clean maxout classifies correctly is drawn).
    units_shown: maxout units drawn per model in Fig. 3.
    eps: the FGSM eps marked on the error plot, and of the pair's training.
    alpha: the weight of the clean term of the pair's adversarial training.
    seeds: always 1: the figures use one pair of maxouts.
  """

  maxout: maxout.Preset
  eps_max: float
  points: int
  examples: int
  units_shown: int
  eps: float = 0.25
  alpha: float = 0.5
  seeds: int = 1


PRESETS = {
    # Without mnist_maxout's parameters: its quick setup (240 units x 5
    # pieces, all 60,000 images, momentum 0.7, lr decay 1.00007) for 8
    # epochs per model, about 3 minutes on 2 CPU cores for both; with them,
    # under a minute. eps_max = 15 shows several linear pieces of every
    # logit, and is our choice.
    "quick": Preset(
        dataclasses.replace(maxout.PRESETS["quick"], epochs=8, adversarial_epochs=None),
        eps_max=15.0,
        points=301,
        examples=100,
        units_shown=8,
    ),
    # mnist_maxout's paper-scale pair (1600 units, early stopping, retraining).
    "paper": Preset(
        maxout.PRESETS["paper"], eps_max=15.0, points=601, examples=1000, units_shown=12
    ),
    # Seconds, for the tests.
    "tiny": Preset(
        maxout.Preset(units=8, epochs=1, seeds=1, patience=None, retrain=False),
        eps_max=2.0,
        points=11,
        examples=4,
        units_shown=2,
    ),
}


# ---------------------------------------------------------------------------
# The pair of maxouts.
# ---------------------------------------------------------------------------


def maxout_pair(
    preset: Preset, data: data_lib.MNIST, out: pathlib.Path
) -> tuple[models.Classifier, dict[str, Any], str]:
  """The clean and adversarial maxouts: mnist_maxout's, else trained here.

  Returns:
    ``(model, {"clean": params, "adversarial": params}, source)``.
  """
  path = out / PARAMS_FILE
  if path.exists():
    model, params = maxout.load_params(path)
    return model, params, str(path)
  print(f"{path} not found: training a {preset.maxout.units}-unit maxout pair here", flush=True)
  work = out / f"{NAME}_runs"
  settings = dataclasses.replace(preset.maxout, eps=preset.eps, alpha=preset.alpha, seeds=1)
  (clean,) = maxout.train("clean", objectives.Clean(), "error", settings, data, work)
  adversarial = objectives.Adversarial(preset.eps, preset.alpha)
  (robust,) = maxout.train("adversarial", adversarial, "fgsm_error", settings, data, work)
  params = {"clean": clean.params, "adversarial": robust.params}
  return models.maxout_mlp(units=preset.maxout.units), params, f"trained in {work}"


# ---------------------------------------------------------------------------
# Fig. 4: logits along one FGSM direction.
# ---------------------------------------------------------------------------


def logits_along_fgsm(
    model: models.Classifier, params: Any, x: np.ndarray, y: np.ndarray, eps_values: np.ndarray
) -> np.ndarray:
  """Logits at ``x + eps * sign(grad_x J)`` per eps, shape ``(K, n, classes)``."""
  direction = jnp.sign(advjax.input_grad(model.loss_fn(), params, x, y))
  return np.asarray(advjax.direction_sweep(model.scores, params, x, direction, eps_values))


def line_fit_r2(eps_values: np.ndarray, logits: np.ndarray) -> float:
  """Mean R^2 of a straight line fitted to each logit on each side of eps = 0.

  Args:
    eps_values: the sweep's epsilons, symmetric about 0, shape ``(K,)``.
    logits: shape ``(K, n, classes)``.

  Returns:
    The mean over sides, examples and classes; a constant logit counts as 1.
  """
  scores = []
  for side in (eps_values <= 0, eps_values >= 0):
    e = eps_values[side] - eps_values[side].mean()
    z = logits[side] - logits[side].mean(axis=0)
    slope = np.einsum("k,knc->nc", e, z) / np.sum(e * e)
    residual = np.sum((z - e[:, None, None] * slope) ** 2, axis=0)
    total = np.sum(z * z, axis=0)
    scores.append(np.where(total > 0, 1 - residual / np.maximum(total, 1e-30), 1.0))
  return float(np.mean(scores))


def fig4(eps_values: np.ndarray, logits: np.ndarray, label: int) -> Figure:
  """Draws one image's ten logits against eps, the predicted class shaded below."""
  figure = Figure(figsize=(8, 4.5), layout="constrained")
  axes = figure.subplots()
  colours = [f"C{k}" for k in range(logits.shape[-1])]
  for k in range(logits.shape[-1]):
    axes.plot(
        eps_values,
        logits[:, k],
        color=colours[k],
        linewidth=2.5 if k == label else 1.2,
        label=f"{k}" + (" (true)" if k == label else ""),
    )
  predicted = logits.argmax(axis=-1)
  bottom = axes.get_ylim()[0]
  axes.scatter(
      eps_values,
      np.full_like(eps_values, bottom),
      c=[colours[k] for k in predicted],
      marker="s",
      s=12,
      label="predicted class",
  )
  axes.axvline(0, color="grey", linewidth=0.5)
  axes.set_xlabel("eps (x + eps sign(grad_x J))")
  axes.set_ylabel("logit")
  axes.set_title("Maxout logits along one FGSM direction (cf. the paper's Fig. 4)")
  axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  return figure


# ---------------------------------------------------------------------------
# Error against eps for every model.
# ---------------------------------------------------------------------------


def gather_sweeps(out: pathlib.Path) -> tuple[dict[str, dict[str, list[Any]]], list[str]]:
  """The ``sweep`` entries of every other results file in ``out``.

  Returns:
    ``(curves, notes)``: curves keyed ``"<file>: <label>"``, and a note per
    file that was skipped (unreadable, or without a ``sweep``).
  """
  curves, notes = {}, []
  for path in sorted(out.glob("*.json")):
    if path.stem == NAME:
      continue
    try:
      sweep = json.loads(path.read_text()).get("sweep")
    except (OSError, ValueError, AttributeError) as error:
      notes.append(f"{path.name}: unreadable ({error})")
      continue
    if not isinstance(sweep, dict):
      notes.append(f"{path.name}: no sweep")
      continue
    for label, entry in ({None: sweep} if "eps" in sweep else sweep).items():
      if isinstance(entry, dict) and {"eps", "error"} <= entry.keys():
        curves[path.stem if label is None else f"{path.stem}: {label}"] = entry
      else:
        notes.append(f"{path.name}: sweep {label or ''!r} lacks eps and error lists")
  return curves, notes


def error_figure(curves: dict[str, dict[str, list[Any]]], eps: float) -> Figure:
  """Every model's FGSM error against eps on one plot, ``eps`` marked."""
  figure = Figure(figsize=(7.5, 4.5), layout="constrained")
  axes = figure.subplots()
  for label, curve in curves.items():
    axes.plot(curve["eps"], 100 * np.asarray(curve["error"], float), marker=".", label=label)
  axes.axvline(eps, color="grey", linestyle=":", linewidth=1)
  axes.set_xlabel("eps")
  axes.set_ylabel("test error under FGSM (%)")
  axes.set_ylim(0, 100)
  axes.set_title("Error against eps, test set, no clipping")
  axes.legend(fontsize=7)
  return figure


# ---------------------------------------------------------------------------
# Fig. 3: first-layer weights.
# ---------------------------------------------------------------------------


def participation_ratio(kernel: np.ndarray) -> float:
  """Mean over filters (columns) of ``(sum w^2)^2 / (d sum w^4)``, in ``(0, 1]``."""
  squares = np.asarray(kernel, np.float64) ** 2
  return float(
      np.mean(squares.sum(0) ** 2 / (kernel.shape[0] * np.maximum((squares**2).sum(0), 1e-300)))
  )


def weights_figure(kernels: dict[str, np.ndarray], pieces: int, units: int) -> Figure:
  """Draws the first ``units`` maxout units' filters of each model, one row per unit."""
  figure = Figure(
      figsize=(0.8 * pieces * len(kernels) + 0.5, 0.8 * units + 0.8), layout="constrained"
  )
  for axes, (name, kernel) in zip(figure.subplots(1, len(kernels)), kernels.items()):
    filters = np.asarray(kernel)[:, : units * pieces].T.reshape(units, pieces, 28, 28)
    # Each filter on its own scale: their norms differ, their shapes are the point.
    filters = filters / np.maximum(np.abs(filters).max(axis=(2, 3), keepdims=True), 1e-12)
    tiles = np.pad(filters, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    axes.imshow(
        tiles.transpose(0, 2, 1, 3).reshape(units * 30, pieces * 30), cmap="gray", vmin=-1, vmax=1
    )
    axes.set_title(f"{name} maxout")
    axes.set_axis_off()
  figure.suptitle("First-layer weights: a row per maxout unit, a column per piece " "(cf. Fig. 3)")
  return figure


# ---------------------------------------------------------------------------
# The experiment.
# ---------------------------------------------------------------------------


def fig4_numbers(
    model: models.Classifier, params: Any, test: data_lib.Split, preset: Preset, out: pathlib.Path
) -> tuple[dict[str, Any], str]:
  """Fig. 4's numbers on the first test images, and the figure of one of them (its path)."""
  eps_values = np.linspace(-preset.eps_max, preset.eps_max, preset.points, dtype=np.float32)
  n = min(preset.examples, len(test.y))
  logits = logits_along_fgsm(model, params, test.x[:n], test.y[:n], eps_values)
  wrong = logits.argmax(-1) != test.y[:n]
  clean_index = int(np.argmin(np.abs(eps_values)))
  correct = np.flatnonzero(~wrong[clean_index])
  shown = int(correct[0]) if correct.size else 0
  figure = fig4(eps_values, logits[:, shown], int(test.y[shown]))
  numbers = {
      "eps_max": preset.eps_max,
      "points": preset.points,
      "examples": n,
      "line_r2": line_fit_r2(eps_values, logits),
      "wrong_fraction_positive_eps": float(wrong[eps_values > 0].mean()),
      "shown_test_index": shown,
  }
  return numbers, files.save_figure(figure, out, f"{NAME}_fig4_logits")


def run(preset: Preset, data: data_lib.MNIST, out: pathlib.Path, args: Any) -> dict[str, Any]:
  """Measures and draws the three figures; returns the results (without ``seconds``)."""
  del args
  model, params, source = maxout_pair(preset, data, out)
  test = data.test
  numbers, fig4_path = fig4_numbers(model, params["clean"], test, preset, out)
  figures = {"fig4_logits": fig4_path}

  # Error against eps.
  first = models.maxout_linear_first(model)
  grid = curves.sweep_grid(preset.eps)
  sweep = {
      f"{name} maxout": curves.sweep(model, params[name], test, grid, probs_fn=first)
      for name in maxout.MODEL_NAMES
  }
  others, notes = gather_sweeps(out)
  for note in notes:
    print(f"  left out of the error plot: {note}")
  figures["error_vs_eps"] = files.save_figure(
      error_figure({**{f"{NAME}: {k}": v for k, v in sweep.items()}, **others}, preset.eps),
      out,
      f"{NAME}_error_vs_eps",
  )

  # Fig. 3.
  kernels = {name: np.asarray(params[name]["maxout_0"]["kernel"]) for name in maxout.MODEL_NAMES}
  figures["fig3_weights"] = files.save_figure(
      weights_figure(kernels, model.module.pieces, min(preset.units_shown, model.module.units)),
      out,
      f"{NAME}_fig3_weights",
  )
  return {
      "maxouts": source,
      "fig4": numbers,
      "participation_ratio": {name: participation_ratio(k) for name, k in kernels.items()},
      "sweep": sweep,
      "figures": figures,
      "left_out": notes,
      "config": {"sweep_eps": list(grid)},
  }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows F4 (Fig. 4) and M6's Fig. 3 proxy."""
  sweep, fig4_, ratio = results["sweep"], results["fig4"], results["participation_ratio"]
  r2, wrong_fraction = fig4_["line_r2"], fig4_["wrong_fraction_positive_eps"]
  # Fig. 4 asks for a trained classifier, else its lines say nothing.
  clean_error, _ = curves.at_eps(sweep["clean maxout"], 0.0)
  trained = verdicts.learnt(clean_error)
  both_trained = trained and verdicts.learnt(curves.at_eps(sweep["adversarial maxout"], 0.0)[0])
  localized = ratio["adversarial"] / ratio["clean"]
  # At least a tenth fewer pixels per filter counts as "more localized".
  fig3_verdict = (
      "not reproduced"
      if not both_trained or localized >= 1
      else "reproduced"
      if localized <= 0.9
      else "same direction"
  )
  figure_note = (
      f"clean maxout (test error {numeric.percent(clean_error, 2)}), first "
      f"{fig4_['examples']} test images, eps in +-{fig4_['eps_max']}"
  )
  result = [
      verdicts.paper_row(
          paper.FIGURES["F4.line_r2"],
          r2,
          verdicts.judge(r2, 1.0, 0.05, r2 >= 0.8, trained=trained),
          f"at least 0.95 counts as reproduced, 0.8 as the same direction; {figure_note}",
      ),
      verdicts.paper_row(
          paper.FIGURES["F4.wrong_fraction"],
          wrong_fraction,
          verdicts.judge(wrong_fraction, 1.0, 0.5, wrong_fraction > 0, trained=trained),
          f"at least half counts as reproduced; {figure_note}",
      ),
      verdicts.paper_row(
          paper.FIGURES["M6.localized"],
          localized,
          fig3_verdict,
          f"at most 0.9 counts as reproduced, below 1 as the same direction; "
          f"clean {ratio['clean']:.3f}, adversarial {ratio['adversarial']:.3f}: the "
          "mean fraction of pixels a filter uses; see the figure",
      ),
  ]
  for row, digits in zip(result, (3, 3, 2)):
    row["display"] = f"{row['measured']:.{digits}f}"
  return result


EXPERIMENT = runner.Experiment(
    NAME,
    "Fig. 4 (logits along an FGSM direction), error against eps for every "
    "model, and Fig. 3 (maxout weights).",
    PRESETS,
    run,
    rows=rows,
    alpha=True,
    prepare=runner.one_seed(f"experiments.{NAME}", "the figures use one pair of maxouts"),
    errors=(maxout.ParamsFileError,),
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the experiment; see `experiments.runner.main`."""
  return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
  main()
