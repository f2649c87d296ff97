"""AutoAttack in the experiments: its budget as a preset field, and a model's robustness curve."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax

import advjax
from advjax import data as data_lib

__all__ = ["TOKEN", "Budget", "accuracy_text", "autoattack", "curve_figure", "preset_autoattack"]

IMAGE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Budget:
  """AutoAttack standard's budget; the defaults are the reference's (fra31/auto-attack).

  Attributes:
    num_steps: APGD-CE and APGD-T iterations.
    num_targets: target classes of APGD-T and FAB-T.
    fab_steps: FAB-T iterations per target.
    num_queries: Square's queries.
  """

  num_steps: int = 100
  num_targets: int = 9
  fab_steps: int = 100
  num_queries: int = 5000


TOKEN = Budget(num_steps=3, num_targets=1, fab_steps=3, num_queries=10)
"""A token budget: the tiny presets' AutoAttack, which the tests run in seconds."""


def autoattack(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    test: data_lib.Split,
    eps_values: Sequence[float],
    *,
    subset: int,
    budget: Budget,
    key: jax.Array,
    stacked: bool = False,
) -> dict[str, Any]:
  """AutoAttack standard at every eps on the first ``subset`` test images, in one program.

  Args:
    logits_fn: ``(params, x) -> logits`` of the model (``model.scores``; for an
      ensemble, `advjax.ensemble_logits`); inputs in [0, 1].
    params: its parameters (members stacked on a leading axis with ``stacked``).
    test: the test split.
    eps_values: the radii, increasing.
    subset: the first this many test images are attacked (all if fewer).
    budget: the attacks' iterations and queries.
    key: PRNG key of the random starts and Square's proposals.
    stacked: evaluate every stacked member, in the same program.

  Returns:
    `advjax.autoattack_report`'s dict (``eps``, ``n``, ``robust_accuracy``,
    ``standard_error``, ``broken_by``, ``flags``) with ``budget`` and ``seconds``.
  """
  n = min(subset, len(test.y))
  start = time.perf_counter()
  report = advjax.autoattack_report(
      logits_fn,
      params,
      test.x[:n],
      test.y[:n],
      list(eps_values),
      stacked=stacked,
      key=key,
      image_shape=IMAGE,
      **dataclasses.asdict(budget),
  )
  return {**report, "budget": dataclasses.asdict(budget), "seconds": time.perf_counter() - start}


def preset_autoattack(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    test: data_lib.Split,
    preset: Any,
    key: jax.Array,
) -> dict[str, Any]:
  """``{"autoattack": autoattack(...)}`` as a preset asks for it; ``{}`` where it asks for none.

  Args:
    logits_fn: as in `autoattack`.
    params: the model's parameters.
    test: the test split.
    preset: an experiment's preset with ``autoattack_subset`` (0: none),
      ``autoattack_eps`` and the ``autoattack`` budget.
    key: PRNG key of the attacks.
  """
  if not preset.autoattack_subset:
    return {}
  report = autoattack(
      logits_fn,
      params,
      test,
      preset.autoattack_eps,
      subset=preset.autoattack_subset,
      budget=preset.autoattack,
      key=key,
  )
  return {"autoattack": report}


def accuracy_text(report: dict[str, Any] | None) -> str:
  """``"; AutoAttack robust accuracy 52.2% at eps 0.1, ..."`` for a log line; '' without one."""
  if report is None:
    return ""
  pairs = zip(report["eps"], report["robust_accuracy"])
  return "; AutoAttack robust accuracy " + ", ".join(f"{a:.1%} at eps {e:g}" for e, a in pairs)


def curve_figure(reports: dict[str, dict[str, Any]]) -> Any:
  """Robust accuracy against eps, one line per model with binomial error bars.

  Args:
    reports: a label -> `autoattack`'s dict of one model.

  Returns:
    A matplotlib ``Figure``, or None without matplotlib.
  """
  try:
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  figure = Figure(figsize=(6, 4), layout="constrained")
  axes = figure.subplots()
  for label, report in reports.items():
    accuracy = [100 * a for a in report["robust_accuracy"]]
    error = [100 * e for e in report["standard_error"]]
    axes.errorbar(report["eps"], accuracy, yerr=error, marker="o", capsize=3, label=label)
  n = next(iter(reports.values()))["n"]
  axes.set_xlabel("eps (L-infinity, inputs in [0, 1])")
  axes.set_ylabel(f"AutoAttack robust accuracy (%), {n:,} test images")
  axes.set_ylim(0, 100)
  axes.legend()
  return figure
