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
import functools
import json
import pathlib
import time
import zipfile
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from matplotlib.figure import Figure

import advjax
from advjax import data as data_lib
from advjax import models
from advjax import train
from advjax.checkpoint import RunMismatchError
from experiments import common
from experiments import mnist_maxout
from experiments.common import judge, learnt

NAME = "epsilon_sweep"
PROG = f"experiments.{NAME}"
EPS = 0.25
ALPHA = 0.5
# The eps grid of every sweep this project draws: 0.25 lies on it exactly.
SWEEP_EPS = np.linspace(0.0, 0.5, 21, dtype=np.float32)
PARAMS_FILE = mnist_maxout.PARAMS_FILE
MODEL_NAMES = ("clean", "adversarial")


class ParamsFileError(ValueError):
  """mnist_maxout's parameter file is unreadable or not a pair of maxouts."""


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of the figures, and of the maxouts trained when none is given.

  Attributes:
    maxout: how to train the pair here (`experiments.mnist_maxout.Preset`),
      used only without ``OUT/mnist_maxout_params.npz``.
    eps_max: Fig. 4 sweeps eps through ``[-eps_max, eps_max]``.
    points: number of eps values of Fig. 4's sweep.
    examples: test images whose sweeps give Fig. 4's numbers (the first one
      the clean maxout classifies correctly is drawn).
    units_shown: maxout units drawn per model in Fig. 3.
  """

  maxout: mnist_maxout.Preset
  eps_max: float
  points: int
  examples: int
  units_shown: int


PRESETS = {
    # Without mnist_maxout's parameters: its quick setup (240 units x 5
    # pieces, all 60,000 images, momentum 0.7, lr decay 1.00007) for 8
    # epochs per model, about 3 minutes on 2 CPU cores for both; with them,
    # under a minute. eps_max = 15 shows several linear pieces of every
    # logit, and is our choice.
    "quick": Preset(dataclasses.replace(mnist_maxout.PRESETS["quick"], epochs=8,
                                        adversarial_epochs=None),
                    eps_max=15.0, points=301, examples=100, units_shown=8),
    # mnist_maxout's paper-scale pair (1600 units, early stopping, retraining).
    "paper": Preset(mnist_maxout.PRESETS["paper"], eps_max=15.0, points=601,
                    examples=1000, units_shown=12),
    # Seconds, for the tests.
    "tiny": Preset(mnist_maxout.Preset(units=8, epochs=1, seeds=1, patience=None,
                                       retrain=False),
                   eps_max=2.0, points=11, examples=4, units_shown=2),
}


# ---------------------------------------------------------------------------
# Sweeps of a maxout, shared with the other experiments.
# ---------------------------------------------------------------------------


@functools.cache
def _loss_fn(model: models.Classifier) -> models.LossFn:
  # One function object per model, so that the jitted sweep compiles once.
  return model.loss_fn()


def sweep_entry(result: advjax.SweepResult) -> dict[str, list[float | None]]:
  """A `advjax.SweepResult` as JSON: ``{"eps", "error", "confidence"}`` lists.

  This is the format of the ``sweep`` entries that this script draws: a
  results file's ``sweep`` is one such dictionary, or a mapping from a
  model's label to one.
  """
  return {"eps": [float(e) for e in np.asarray(result.eps)],
          "error": [float(e) for e in np.asarray(result.error)],
          "confidence": [common.number(c) for c in np.asarray(result.confidence)]}


def maxout_sweep(model: models.Classifier, params: Any, split: Any,
                 eps_values: np.ndarray = SWEEP_EPS) -> advjax.SweepResult:
  """Error and confidence of a softmax maxout under FGSM at each eps, on ``split``.

  Args:
    model: a `advjax.models.maxout_mlp` classifier.
    params: its parameters.
    split: the examples (``x``, ``y``), e.g. the test set.
    eps_values: the epsilons.

  Returns:
    An `advjax.SweepResult`.
  """
  return advjax.epsilon_sweep(_loss_fn(model), models.maxout_linear_first(model), params,
                              split.x, split.y, eps_values, batch_size=500)


def at_eps(sweep: dict[str, list[Any]], eps: float) -> tuple[float, float | None]:
  """``(error, confidence)`` of a `sweep_entry` at the grid value ``eps``."""
  index = int(np.argmin(np.abs(np.asarray(sweep["eps"]) - eps)))
  if not np.isclose(sweep["eps"][index], eps):
    raise ValueError(f"eps {eps} is not on the sweep's grid {sweep['eps']}.")
  return sweep["error"][index], sweep["confidence"][index]


def mean_sweep(entries: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
  """The mean of `sweep_entry` dictionaries of one grid (over seeds or members)."""
  return {"eps": entries[0]["eps"],
          **{key: [common.mean(values) for values in zip(*(e[key] for e in entries))]
             for key in ("error", "confidence")}}


# ---------------------------------------------------------------------------
# The pair of maxouts.
# ---------------------------------------------------------------------------


def load_params_file(path: pathlib.Path) -> tuple[models.Classifier, dict[str, Any]]:
  """Reads mnist_maxout's parameters: the model and ``{"clean": ..., "adversarial": ...}``.

  The file holds one array per parameter, keyed ``<model>/<param path>``
  (``clean/maxout_0/kernel``, ...). The architecture is read off the shapes:
  ``output/kernel`` is ``(units, classes)``, ``maxout_0/kernel`` is
  ``(784, units * pieces)``, one ``maxout_<i>`` per layer.

  Raises:
    ParamsFileError: the file is unreadable, a model is missing, or the
      shapes are not a maxout's.
  """
  try:
    with np.load(path) as arrays:
      flat = {tuple(key.split("/")): arrays[key] for key in arrays.files}
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise ParamsFileError(f"{path}: unreadable: {error}") from None
  params = {name: traverse_util.unflatten_dict(
      {path[1:]: jnp.asarray(value) for path, value in flat.items() if path[0] == name})
      for name in MODEL_NAMES}
  try:
    units = params["clean"]["output"]["kernel"].shape[0]
    pieces = params["clean"]["maxout_0"]["kernel"].shape[1] // units
    layers = sum(key.startswith("maxout_") for key in params["clean"])
    model = models.maxout_mlp(units=units, pieces=pieces, layers=layers)
    for name in MODEL_NAMES:
      expected = jax.tree.map(jnp.shape, model.init(jax.random.key(0),
                                                    jnp.zeros((1, 784))))
      if jax.tree.map(jnp.shape, params[name]) != expected:
        raise ValueError(f"the {name!r} parameters do not have the shapes of a "
                         f"{units}-unit, {pieces}-piece, {layers}-layer maxout")
  except (KeyError, ValueError) as error:
    raise ParamsFileError(f"{path}: expected keys clean/... and adversarial/... of "
                     f"maxout parameters: {error}") from None
  return model, params


def maxout_pair(preset: Preset, data: data_lib.MNIST, out: pathlib.Path
                ) -> tuple[models.Classifier, dict[str, Any], str]:
  """The clean and adversarial maxouts: mnist_maxout's, else trained here.

  Returns:
    ``(model, {"clean": params, "adversarial": params}, source)``.
  """
  path = out / PARAMS_FILE
  if path.exists():
    model, params = load_params_file(path)
    return model, params, str(path)
  print(f"{path} not found: training a {preset.maxout.units}-unit maxout pair here",
        flush=True)
  work = out / f"{NAME}_runs"
  params = {
      "clean": mnist_maxout.train_model("clean", train.Clean(), "error",
                                        preset.maxout, 0, data, work)[0],
      "adversarial": mnist_maxout.train_model(
          "adversarial", train.Adversarial(EPS, ALPHA), "fgsm_error",
          preset.maxout, 0, data, work)[0]}
  return models.maxout_mlp(units=preset.maxout.units), params, f"trained in {work}"


# ---------------------------------------------------------------------------
# Fig. 4: logits along one FGSM direction.
# ---------------------------------------------------------------------------


def logits_along_fgsm(model: models.Classifier, params: Any, x: np.ndarray,
                      y: np.ndarray, eps_values: np.ndarray) -> np.ndarray:
  """Logits at ``x + eps * sign(grad_x J)`` per eps, shape ``(K, n, classes)``."""
  direction = jnp.sign(advjax.input_grad(_loss_fn(model), params, x, y))
  return np.asarray(advjax.direction_sweep(model.scores, params, x, direction,
                                           eps_values))


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


def fig4(path: pathlib.Path, eps_values: np.ndarray, logits: np.ndarray,
         label: int) -> None:
  """Draws one image's ten logits against eps, the predicted class shaded below."""
  figure = Figure(figsize=(8, 4.5), layout="constrained")
  axes = figure.subplots()
  colours = [f"C{k}" for k in range(logits.shape[-1])]
  for k in range(logits.shape[-1]):
    axes.plot(eps_values, logits[:, k], color=colours[k],
              linewidth=2.5 if k == label else 1.2,
              label=f"{k}" + (" (true)" if k == label else ""))
  predicted = logits.argmax(axis=-1)
  bottom = axes.get_ylim()[0]
  axes.scatter(eps_values, np.full_like(eps_values, bottom),
               c=[colours[k] for k in predicted], marker="s", s=12,
               label="predicted class")
  axes.axvline(0, color="grey", linewidth=0.5)
  axes.set_xlabel("eps (x + eps sign(grad_x J))")
  axes.set_ylabel("logit")
  axes.set_title("Maxout logits along one FGSM direction (cf. the paper's Fig. 4)")
  axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  figure.savefig(path, dpi=120)


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


def error_figure(path: pathlib.Path, curves: dict[str, dict[str, list[Any]]]) -> None:
  """Draws every model's FGSM error against eps on one plot."""
  figure = Figure(figsize=(7.5, 4.5), layout="constrained")
  axes = figure.subplots()
  for label, curve in curves.items():
    axes.plot(curve["eps"], 100 * np.asarray(curve["error"], float), marker=".",
              label=label)
  axes.axvline(EPS, color="grey", linestyle=":", linewidth=1)
  axes.set_xlabel("eps")
  axes.set_ylabel("test error under FGSM (%)")
  axes.set_ylim(0, 100)
  axes.set_title("Error against eps, MNIST test set, no clipping")
  axes.legend(fontsize=7)
  figure.savefig(path, dpi=120)


# ---------------------------------------------------------------------------
# Fig. 3: first-layer weights.
# ---------------------------------------------------------------------------


def participation_ratio(kernel: np.ndarray) -> float:
  """Mean over filters (columns) of ``(sum w^2)^2 / (d sum w^4)``, in ``(0, 1]``."""
  squares = np.asarray(kernel, np.float64) ** 2
  return float(np.mean(squares.sum(0) ** 2
                       / (kernel.shape[0] * np.maximum((squares ** 2).sum(0), 1e-300))))


def weights_figure(path: pathlib.Path, kernels: dict[str, np.ndarray], pieces: int,
                   units: int) -> None:
  """Draws the first ``units`` maxout units' filters of each model, one row per unit."""
  figure = Figure(figsize=(0.8 * pieces * len(kernels) + 0.5, 0.8 * units + 0.8),
                  layout="constrained")
  for axes, (name, kernel) in zip(figure.subplots(1, len(kernels)), kernels.items()):
    filters = np.asarray(kernel)[:, :units * pieces].T.reshape(units, pieces, 28, 28)
    # Each filter on its own scale: their norms differ, their shapes are the point.
    filters = filters / np.maximum(np.abs(filters).max(axis=(2, 3), keepdims=True),
                                   1e-12)
    tiles = np.pad(filters, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    axes.imshow(tiles.transpose(0, 2, 1, 3).reshape(units * 30, pieces * 30),
                cmap="gray", vmin=-1, vmax=1)
    axes.set_title(f"{name} maxout")
    axes.set_axis_off()
  figure.suptitle("First-layer weights: a row per maxout unit, a column per piece "
                  "(cf. Fig. 3)")
  figure.savefig(path, dpi=120)


# ---------------------------------------------------------------------------
# The experiment.
# ---------------------------------------------------------------------------


def run(preset: Preset, data: data_lib.MNIST, out: pathlib.Path) -> dict[str, Any]:
  """Measures and draws the three figures; returns the results (without ``seconds``)."""
  model, params, source = maxout_pair(preset, data, out)
  test = data.test

  # Fig. 4.
  eps_values = np.linspace(-preset.eps_max, preset.eps_max, preset.points,
                           dtype=np.float32)
  n = min(preset.examples, len(test.y))
  logits = logits_along_fgsm(model, params["clean"], test.x[:n], test.y[:n], eps_values)
  wrong = logits.argmax(-1) != test.y[:n]
  positive = eps_values > 0
  wrong_fraction = float(wrong[positive].mean())
  r2 = line_fit_r2(eps_values, logits)
  clean_index = int(np.argmin(np.abs(eps_values)))
  correct = np.flatnonzero(~wrong[clean_index])
  shown = int(correct[0]) if correct.size else 0
  figures = {caption: f"figures/{NAME}_{caption}.png"
             for caption in ("fig4_logits", "error_vs_eps", "fig3_weights")}
  (out / "figures").mkdir(parents=True, exist_ok=True)
  fig4(out / figures["fig4_logits"], eps_values, logits[:, shown], int(test.y[shown]))

  # Error against eps.
  sweep = {f"{name} maxout": sweep_entry(maxout_sweep(model, params[name], test))
           for name in MODEL_NAMES}
  others, notes = gather_sweeps(out)
  for note in notes:
    print(f"  left out of the error plot: {note}")
  error_figure(out / figures["error_vs_eps"],
               {**{f"{NAME}: {k}": v for k, v in sweep.items()}, **others})

  # Fig. 3.
  kernels = {name: np.asarray(params[name]["maxout_0"]["kernel"])
             for name in MODEL_NAMES}
  pieces = model.module.pieces
  weights_figure(out / figures["fig3_weights"], kernels, pieces,
                 min(preset.units_shown, model.module.units))
  ratio = {name: participation_ratio(kernel) for name, kernel in kernels.items()}

  # Fig. 4 asks for a trained classifier, else its lines say nothing.
  clean_error, _ = at_eps(sweep["clean maxout"], 0.0)
  trained = learnt(clean_error)
  both_trained = trained and learnt(at_eps(sweep["adversarial maxout"], 0.0)[0])
  localized = ratio["adversarial"] / ratio["clean"]
  # At least a tenth fewer pixels per filter counts as "more localized".
  fig3_verdict = ("not reproduced" if not both_trained or localized >= 1 else
                  "reproduced" if localized <= 0.9 else "same direction")
  figure_note = (f"clean maxout (test error {common.percent(clean_error, 2)}), "
                 f"first {n} test images, eps in +-{preset.eps_max}")
  rows = [
      common.paper_row(
          "F4", "mean R^2 of a line per logit, each side of eps = 0 (Fig. 4)",
          "nearly straight, piecewise linear", r2,
          judge(r2, 1.0, 0.05, r2 >= 0.8, trained=trained),
          f"at least 0.95 counts as reproduced, 0.8 as the same direction; "
          f"{figure_note}"),
      common.paper_row(
          "F4", "fraction of eps in (0, eps_max] misclassified (Fig. 4)",
          "broad regions", wrong_fraction,
          judge(wrong_fraction, 1.0, 0.5, wrong_fraction > 0, trained=trained),
          f"at least half counts as reproduced; {figure_note}"),
      common.paper_row(
          "M6", "first-layer filters' participation ratio, adversarial / clean "
          "(Fig. 3, our proxy)", "more localized (< 1)", localized, fig3_verdict,
          f"at most 0.9 counts as reproduced, below 1 as the same direction; "
          f"clean {ratio['clean']:.3f}, adversarial {ratio['adversarial']:.3f}: the "
          "mean fraction of pixels a filter uses; see the figure"),
  ]
  for row, digits in zip(rows, (3, 3, 2)):
    row["display"] = f"{row['measured']:.{digits}f}"
  return {
      "maxouts": source,
      "fig4": {"eps_max": preset.eps_max, "points": preset.points, "examples": n,
               "line_r2": r2, "wrong_fraction_positive_eps": wrong_fraction,
               "shown_test_index": shown},
      "participation_ratio": ratio,
      "sweep": sweep,
      "figures": figures,
      "left_out": notes,
      "rows": rows,
  }


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the experiment; a one-line error and exit status 1 on bad data or settings."""
  start = time.perf_counter()
  args = common.parser(PROG, "Fig. 4 (logits along an FGSM direction), error "
                       "against eps for every model, and Fig. 3 (maxout weights).",
                       PRESETS).parse_args(argv)
  if common.positive(PROG, "seeds", args.seeds) not in (None, 1):
    common.fail(PROG, "--seeds must be 1: the figures use one pair of maxouts")
  preset = PRESETS[args.preset]
  data = common.load_data(PROG, args.data_dir)
  args.out.mkdir(parents=True, exist_ok=True)
  try:
    results = run(preset, data, args.out)
  except (ParamsFileError, RunMismatchError) as error:
    common.fail(PROG, error)
  results["config"] = {"preset": args.preset, "seeds": 1, "eps": EPS, "alpha": ALPHA,
                       "clip": None, "sweep_eps": [float(e) for e in SWEEP_EPS],
                       **dataclasses.asdict(preset), "data_dir": args.data_dir}
  print(common.format_rows(
      results["rows"], f"preset {args.preset}, FGSM eps {EPS}, no clipping"))
  common.write_results(args.out, NAME, results, start)


if __name__ == "__main__":
  main()
