"""The report: every number of the paper's table beside ours, with a verdict and the figures.

Reads the results files that the experiments wrote (``OUT/*.json``) and
writes a Markdown report with

- a summary: one line for every row of the paper's table (`paper.ROWS`),
  with the paper's figure, ours, the run that measured it, and a verdict:
  reproduced, same direction, not reproduced, out of scope (with the
  reason), or not run (no results file gives the row). Where several runs
  measure a row (``mnist_maxout.json`` of the quick preset and
  ``mnist_maxout_long.json``, say), the summary takes it from the strongest
  run: the preset closest to the paper's protocol (`maxout.STRENGTH`);
- beyond the paper: every maxout run's models under stronger attacks;
- the details: every measured number (a results file's ``rows``) with its
  verdict and note, as the experiment wrote them;
- every PNG of the results folder, embedded by a path relative to the report.

    python -m experiments.report --out results --report REPORT.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
from typing import Any, Sequence

from experiments import cli
from experiments import files
from experiments import maxout
from experiments import numeric
from experiments import paper
from experiments import robust_training
from experiments import training_study
from experiments import verdicts


def load_results(out: pathlib.Path) -> dict[str, dict[str, Any]]:
  """Every readable ``out/*.json``, keyed by file stem; unreadable ones are skipped."""
  results = {}
  for path in sorted(out.glob("*.json")):
    try:
      content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
      print(f"report: skipping {path}: {error}")
      continue
    if not isinstance(content, dict):
      print(f"report: skipping {path}: its top level is a {type(content).__name__}, not an object")
      continue
    results[path.stem] = content
  return results


def strength(content: dict[str, Any]) -> int:
  """How close a run came to the paper's protocol: its preset's place in `maxout.STRENGTH`."""
  preset = content.get("config", {}).get("preset")
  return maxout.STRENGTH.index(preset) if preset in maxout.STRENGTH else 0


def rows_by_id(results: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """Every measured row, grouped by id, each tagged with its results file."""
  grouped: dict[str, list[dict[str, Any]]] = {}
  for name, content in results.items():
    for row in content.get("rows") or []:
      grouped.setdefault(row["id"], []).append({**row, "file": name})
  return grouped


def strongest(
    rows: list[dict[str, Any]], results: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
  """The rows of the strongest run among those that measured them (the first by name on a tie)."""
  if not rows:
    return rows
  best = max(sorted({row["file"] for row in rows}), key=lambda name: strength(results[name]))
  return [row for row in rows if row["file"] == best]


def _seeds(config: dict[str, Any]) -> str:
  seeds = config.get("seeds")
  if isinstance(seeds, list):
    return f"seeds {', '.join(map(str, seeds))}"
  return "?" if seeds is None else f"{seeds} seed{'s' if seeds != 1 else ''}"


def _run_label(content: dict[str, Any]) -> str:
  config = content.get("config", {})
  return f"{config.get('preset', '?')}, {_seeds(config)}"


def _measured(row: dict[str, Any]) -> str:
  return row.get("display") or numeric.percent(row.get("measured"), 2)


def _cell(text: Any) -> str:
  """Text safe inside a Markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


def summary_line(
    row: paper.Row, rows: list[dict[str, Any]], results: dict[str, dict[str, Any]]
) -> list[str]:
  """The cells of one summary line: id, experiment, paper, ours, run, verdict."""
  if not rows:
    if row.out_of_scope:
      return [row.id, row.experiment, row.paper, "-", "-", f"out of scope: {row.out_of_scope}"]
    where = (
        f"{row.results}.json has no row {row.id}"
        if row.results in results
        else f"no {row.results}.json"
    )
    return [row.id, row.experiment, row.paper, "-", "-", f"not run ({where})"]
  measured = "; ".join(f"{r['metric']}: {_measured(r)}" for r in rows)
  runs = sorted({f"{r['file']} ({_run_label(results[r['file']])})" for r in rows})
  found = [r["verdict"] for r in rows]
  # The summary's verdict of a row is its weakest measured one.
  weakest = max(
      found,
      key=lambda v: (
          verdicts.VERDICTS.index(v) if v in verdicts.VERDICTS else len(verdicts.VERDICTS)
      ),
  )
  verdict = (
      weakest
      if len(set(found)) == 1
      else (f"{weakest} ({found.count('reproduced')} of {len(found)} reproduced)")
  )
  return [row.id, row.experiment, row.paper, measured, "; ".join(runs), verdict]


def _table(header: Sequence[str], lines: list[list[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
      "| " + " | ".join(_cell(c) for c in line) + " |" for line in lines
  ]


def audit_lines(results: dict[str, dict[str, Any]]) -> list[str]:
  """The stronger-attack section: a table per maxout run, and what remains of FGSM's robustness."""
  lines = []
  for name, content in results.items():
    audit = content.get("audit")
    if not audit or "models" not in content:
      continue
    models = content["models"]
    header = (
        "model",
        "FGSM (the paper's)",
        *(f"PGD-40, eps {r}, 3 restarts" for r in audit["clean"]["pgd"]),
        "FGSM, predicted labels",
        "worst FGSM over eps",
    )
    table = [
        [
            model,
            numeric.percent(models[model]["fgsm_error"]),
            *(numeric.percent(error) for error in attacks["pgd"].values()),
            numeric.percent(attacks["fgsm_predicted_labels"]),
            f"{numeric.percent(attacks['worst_fgsm']['error'])} "
            f"(eps {attacks['worst_fgsm']['eps']:.3g})",
        ]
        for model, attacks in audit.items()
    ]
    config = content.get("config", {})
    eps = config.get("eps", 0.25)
    adversarial = audit["adversarial"]
    pgd = adversarial["pgd"].get(f"{eps:g}")
    sentence = (
        f"The adversarially trained maxout's FGSM error of "
        f"{numeric.percent(models['adversarial']['fgsm_error'])} at eps {eps:g} becomes "
        f"{numeric.percent(pgd)} under PGD at the same eps, "
        f"{numeric.percent(adversarial['fgsm_predicted_labels'])} under FGSM with "
        f"predicted labels, and {numeric.percent(adversarial['worst_fgsm']['error'])} "
        f"at the worst eps of FGSM ({adversarial['worst_fgsm']['eps']:.3g}); the clean "
        f"maxout is at {numeric.percent(audit['clean']['pgd'].get(f'{eps:g}'))} under "
        "PGD."
    )
    columns = _autoattack_columns(audit)
    if columns:
      header = (*header, *columns)
      table = [
          [*row, *_autoattack_cells(audit[model]["autoattack"], columns)]
          for row, model in zip(table, audit)
      ]
    lines += [
        f"### {name}.json ({_run_label(content)})",
        "",
        *_table(header, table),
        "",
        sentence,
        "",
        *_survives_lines(audit),
    ]
  return lines


def ensemble_lines(content: dict[str, Any]) -> list[str]:
  """The ensemble under AutoAttack: its columns and what survives; empty if not run."""
  if "autoattack" not in content:
    return []
  audit = {f"ensemble of {content['config']['members']} maxouts": content}
  columns = _autoattack_columns(audit)
  if not columns:
    return []
  (label,) = audit
  row = [label, numeric.percent(content["ensemble"]["fgsm_error"])]
  return [
      f"### ensemble.json ({_run_label(content)})",
      "",
      "AutoAttack attacks the ensemble as a whole: its logits are the log of the members' mean "
      "probabilities (`advjax.ensemble_logits`).",
      "",
      *_table(
          ("model", "FGSM (the paper's)", *columns),
          [[*row, *_autoattack_cells(content["autoattack"], columns)]],
      ),
      "",
      *_survives_lines(audit, noun="the {}"),
  ]


AUTOATTACK_COLUMNS = (0.1, 0.25, 0.3)
"""The radii of the AutoAttack columns: 0.1, the paper's 0.25 and MNIST's standard 0.3."""


def _autoattack_columns(audit: dict[str, Any]) -> dict[str, float]:
  """Header -> eps of the AutoAttack columns every model of ``audit`` has; empty if none."""
  attacks = [attacks.get("autoattack") for attacks in audit.values()]
  if not attacks or not all(attacks):
    return {}
  n = attacks[0]["n"]
  return {
      f"AutoAttack, eps {eps:g} ({n:,} images)": eps
      for eps in AUTOATTACK_COLUMNS
      if all(any(math.isclose(eps, e, abs_tol=1e-6) for e in a["eps"]) for a in attacks)
  }


def _autoattack_error(autoattack: dict[str, Any], eps: float) -> float:
  at = next(i for i, e in enumerate(autoattack["eps"]) if math.isclose(e, eps, abs_tol=1e-6))
  return 1 - autoattack["robust_accuracy"][at]


def _autoattack_cells(autoattack: dict[str, Any], columns: dict[str, float]) -> list[str]:
  return [numeric.percent(_autoattack_error(autoattack, eps)) for eps in columns.values()]


def _survives_lines(audit: dict[str, Any], noun: str = "the {} maxout") -> list[str]:
  """A sentence per model (``noun`` names it) on what AutoAttack leaves of it, with the flags."""
  columns = _autoattack_columns(audit)
  lines = []
  for model, attacks in audit.items() if columns else ():
    autoattack = attacks["autoattack"]
    kept = ", ".join(
        f"{numeric.percent(1 - _autoattack_error(autoattack, eps))} at eps {eps:g}"
        for eps in columns.values()
    )
    if "flags" in autoattack:  # one run's flags, each named
      flagged = _masking_text(autoattack) + "."
    else:  # seeds averaged: whether any fired
      flagged = ". AutoAttack's gradient-masking flags fired." if autoattack["flagged"] else "."
    lines.append(f"- AutoAttack standard, {noun.format(model)}: robust accuracy {kept}{flagged}")
  return lines + [""] if lines else []


# A member whose clean test error is at least this learned nothing: ten balanced
# classes leave 90% to a constant guess.
CHANCE = 0.5


def plateau_text(losses: list[float] | None) -> str:
  """How many first epochs kept the training loss at chance (ln 10), as a cell.

  The ±0.005 initialisation starts every maxout at uniform probabilities, a
  loss of ln 10; the larger the training eps, the longer it stays there.
  """
  if losses is None:
    return "-"
  plateau = next(
      (i for i, loss in enumerate(losses) if loss is not None and loss < 0.99 * math.log(10)),
      None,
  )
  return f"all {len(losses)}" if plateau is None else str(plateau)


def study_lines(content: dict[str, Any]) -> list[str]:
  """The training study's section: a table per group, and where each score is lowest."""
  config = content.get("config", {})
  eps = config.get("eps", 0.25)
  lines = [
      f"From training_study.json ({_run_label(content)}; "
      f"{config.get('training', {}).get('units', '?')}-unit maxouts, one seed per "
      "group): test errors of each member. FGSM and PGD at the attack eps "
      f"{eps:g}; PGD as above (40 steps, 3 restarts, [0, 1]).",
      "",
  ]
  names = {
      "eps": ("training eps", f"alpha {config.get('alpha', 0.5):g}"),
      "alpha": ("alpha", f"training eps {eps:g}"),
  }
  for name, group in content["groups"].items():
    setting, fixed = names[name]
    rows = group["members"]
    header = [setting, "clean", "FGSM at its training eps", f"FGSM at {eps:g}", f"PGD at {eps:g}"]
    table = [
        [f"{value:g}", *(numeric.percent(row[key], 2) for key in training_study.SCORES)]
        for value, row in zip(group["values"], rows)
    ]
    columns = _autoattack_columns({f"{v:g}": row for v, row in zip(group["values"], rows)})
    header += list(columns)
    for cells, row in zip(table, rows) if columns else ():
      cells += _autoattack_cells(row["autoattack"], columns)
    if any("train_loss" in row for row in rows):  # older runs did not record it
      header.append("epochs at chance loss")
      for cells, row in zip(table, rows):
        cells.append(plateau_text(row.get("train_loss")))
    lines += [f"**{setting} ({fixed})**", "", *_table(header, table), ""]
    stuck = [value for value, row in zip(group["values"], rows) if row["test_error"] >= CHANCE]
    pairs = [
        (value, row) for value, row in zip(group["values"], rows) if row["test_error"] < CHANCE
    ]
    if stuck:
      lines += [
          f"Did not learn (clean error {numeric.percent(CHANCE, 0)} or more, chance level): "
          f"{setting} {', '.join(f'{value:g}' for value in stuck)}; left out below.",
          "",
      ]
    diverged = [
        f"member {m} ({setting} {value:g}) at epoch {row['diverged']}"
        for m, (value, row) in enumerate(zip(group["values"], rows))
        if row.get("diverged")
    ]
    if diverged:
      lines += [
          f"Diverged (training loss not finite; scored with its last finite parameters): "
          f"{', '.join(diverged)}.",
          "",
      ]
    if not pairs:
      continue
    lowest = lambda key, pairs=pairs: min(pairs, key=lambda pair: pair[1][key])
    sentences = [
        f"the {label} is lowest at {setting} {value:g} " f"({numeric.percent(row[key], 2)})"
        for key, label in (
            ("test_error", "clean error"),
            ("fgsm_error", f"FGSM error at {eps:g}"),
            ("pgd_error", f"PGD error at {eps:g}"),
        )
        for value, row in [lowest(key)]
    ]
    lines += [f"Across {setting}: " + "; ".join(sentences) + ".", ""]
    audit = {f"{value:g}": row for value, row in pairs}
    lines += _survives_lines(audit, f"the member at {setting} {{}}")
  return lines


def robust_lines(content: dict[str, Any]) -> list[str]:
  """The robust-training section: every model's scores, a sentence per method, the study."""
  config = content.get("config", {})
  subset = content["models"][0]["pgd_examples"] if content["models"] else 0
  steps = content["models"][0]["pgd_steps"] if content["models"] else "?"
  header = (
      "model",
      "objective",
      "eps",
      "clean error",
      "FGSM error",
      f"PGD-{steps} x {config.get('restarts', '?')} error ({subset} images)",
      f"AutoAttack error ({subset} images)",
      "watched PGD collapse",
      "kept epoch",
      "train s",
  )
  table = [
      [
          row["model"],
          row["method"],
          f"{row['eps']:g}",
          numeric.percent(row["test_error"], 2),
          numeric.percent(row["fgsm_error"]),
          f"{numeric.percent(row['pgd_error'])} +- {numeric.percent(row['pgd_error_se'])}",
          _autoattack_cell(row.get("autoattack")),
          "-" if row["collapse_epoch"] is None else f"epoch {row['collapse_epoch']}",
          str(row["kept_epoch"]),
          f"{row['train_seconds']:.0f}",
      ]
      for row in content["models"]
  ]
  sentences = [
      f"- {row['model']}, {row['method']}: {numeric.percent(1 - row['test_error'], 2)} clean and "
      f"{numeric.percent(1 - row['pgd_error'])} PGD accuracy at eps {row['eps']:g}"
      + (
          f", FGSM accuracy {numeric.percent(1 - row['fgsm_error'])}: a model that resists FGSM "
          "and not PGD, the mark of a masked gradient"
          if row["fgsm_error"] < 0.5 <= row["pgd_error"]
          else ""
      )
      + (
          "; its watched PGD accuracy collapsed at epoch "
          f"{row['collapse_epoch']} and the best epoch before it was kept"
          if row["collapse_epoch"] is not None
          else ""
      )
      + ("; it did not learn: chance level" if row["test_error"] > 0.8 else "")
      + _masking_text(row.get("autoattack"))
      + "."
      for row in content["models"]
  ]
  lines = [
      f"From robust_training.json ({_run_label(content)}; CNN of Wong et al. at eps "
      f"{config.get('eps', 0.3):g}, the paper's 240-unit maxout at "
      f"{config.get('maxout_eps', 0.25):g}; "
      f"inputs in [0, 1]). Clean and FGSM errors on the whole test set; PGD-{steps} (step 0.01, "
      f"best of the restarts) on the first {subset} test images, with one binomial standard "
      "error. AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; advjax.autoattack) on the "
      "same images. Every run was watched: PGD-10 accuracy on a fixed batch of training images "
      "after each epoch, the best epoch kept.",
      "",
      *_table(header, table),
      "",
      *sentences,
      "",
      *target_lines(content),
      *tried_lines(content),
  ]
  return lines + field_and_study_lines(content)


def _autoattack_cell(autoattack: dict[str, Any] | None) -> str:
  """AutoAttack's error at the row's one eps, with its standard error; '-' if not run."""
  if autoattack is None:
    return "-"
  error = 1 - autoattack["robust_accuracy"][0]
  flag = " (flagged)" if autoattack["flags"]["any"] else ""
  return f"{numeric.percent(error)} +- {numeric.percent(autoattack['standard_error'][0])}{flag}"


def _masking_text(autoattack: dict[str, Any] | None) -> str:
  """What AutoAttack's gradient-masking flags saw, as a clause ('' when none fired)."""
  if autoattack is None or not autoattack["flags"]["any"]:
    return ""
  flags = autoattack["flags"]
  seen = []
  if any(flags["square_broke"]):
    seen.append(f"Square broke {_points(sum(flags['square_broke']))} the white-box attacks missed")
  if flags["zero_gradients"]:
    seen.append(f"{_points(flags['zero_gradients'])} had a zero gradient")
  if flags["non_monotone"]:
    seen.append("robust accuracy was not monotone in eps")
  return "; AutoAttack flags gradient masking: " + ", ".join(seen)


def _points(count: int) -> str:
  return f"{count} point" + ("" if count == 1 else "s")


def _autoattack_accuracy(row: dict[str, Any]) -> str:
  """' (AutoAttack x%)' for a row with an AutoAttack score, else ''."""
  autoattack = row.get("autoattack")
  if autoattack is None:
    return ""
  return f" (AutoAttack {numeric.percent(autoattack['robust_accuracy'][0])})"


def target_lines(content: dict[str, Any]) -> list[str]:
  """The quick preset's targets (`robust_training.TARGETS`), each met or missed by how much."""
  lines = []
  for method, error, least in robust_training.TARGETS:
    rows = [
        row
        for row in content["models"]
        if row["model"] == "small CNN" and row["method"].startswith(method)
    ]
    if not rows:
      continue
    row = rows[0]
    accuracy = 1 - row[error]
    what = "clean" if error == "test_error" else f"PGD-{row['pgd_steps']}"
    verdict = (
        f"met ({numeric.percent(accuracy)})"
        if accuracy >= least
        else f"missed by {100 * (least - accuracy):.1f} points ({numeric.percent(accuracy)})"
    )
    lines.append(
        f"- target: {row['method']}, {what} accuracy >= {numeric.percent(least)}: {verdict}."
    )
  return lines + [""] if lines else []


def tried_lines(content: dict[str, Any]) -> list[str]:
  """What the run tried where a target was missed: its schedule, and the step study's best."""
  config, study = content.get("config", {}), content["study"]
  best = min(study["members"], key=lambda m: m["pgd_error"])
  return [
      f"What was tried: {config.get('epochs', '?')} epochs per CNN (Wong et al. train 10), PGD "
      f"and TRADES with {config.get('steps', '?')} steps, Adam with a triangular schedule "
      f"peaking at {config.get('learning_rate', '?')}; the step study below trains FGSM from a "
      "random start with several steps as one population: the best, "
      f"{best['step_over_eps']:g} eps, keeps {numeric.percent(1 - best['pgd_error'])} "
      f"PGD-{best['pgd_steps']} "
      f"accuracy{_autoattack_accuracy(best)} with {numeric.percent(1 - best['test_error'], 2)} "
      "clean.",
      "",
  ]


def field_and_study_lines(content: dict[str, Any]) -> list[str]:
  """The end of the robust-training section: the field's figures, and the step study."""
  field = [
      f"{name} {' / '.join(f'{v:.2f}' for v in values)}"
      for name, values in content.get("field", {}).items()
  ]
  study = content["study"]
  collapse = study.get("collapse_from")
  lines = []
  if field:
    lines += [
        "The field's MNIST figures at eps 0.3 (clean / PGD as reported / AutoAttack accuracy, "
        "from AutoAttack's table): " + "; ".join(field) + ".",
        "",
    ]
  lines += [
      f"Study: FGSM from a random start at eps {study['eps']:g} over steps of "
      + ", ".join(f"{m['step_over_eps']:g}" for m in study["members"])
      + f" eps, one vmapped population: PGD-{study['members'][0]['pgd_steps']} accuracy "
      + ", ".join(
          f"{numeric.percent(1 - m['pgd_error'])}{_autoattack_accuracy(m)}"
          for m in study["members"]
      )
      + ". "
      + (
          f"Training collapsed (catastrophic overfitting) from a step of {collapse:g} eps."
          if collapse is not None
          else "No member's watched PGD accuracy collapsed."
      ),
      "",
  ]
  return lines


def figures(
    out: pathlib.Path, results: dict[str, dict[str, Any]], report: pathlib.Path
) -> list[str]:
  """Markdown embedding every PNG under ``out``, captioned from the results' ``figures``.

  A results file's ``figures`` lists PNG paths relative to ``out``, or maps
  a caption to each.
  """
  captions = {}
  for name, content in results.items():
    listed = content.get("figures") or {}
    items = (
        listed.items()
        if isinstance(listed, dict)
        else ((pathlib.Path(file).stem, file) for file in listed)
    )
    for caption, file in items:
      captions[pathlib.Path(file).as_posix()] = f"{name}: {caption}"
  lines = []
  for path in sorted(out.rglob("*.png")):
    relative = os.path.relpath(path.resolve(), report.resolve().parent)
    caption = captions.get(path.relative_to(out).as_posix(), path.stem)
    lines += [f"### {caption}", "", f"![{caption}]({pathlib.Path(relative).as_posix()})", ""]
  return lines


def render(out: pathlib.Path, report: pathlib.Path) -> str:
  """The report's Markdown for the results folder ``out``.

  A results file that the report cannot read (a row without ``verdict``, a
  study without ``groups``) is skipped with one line naming it, and its rows
  read "not run", so one malformed file never hides the others.
  """
  results = load_results(out)
  for name, content in list(results.items()):
    try:
      _render(out, report, {name: content})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
      print(
          f"report: skipping {out / name}.json: malformed ({type(error).__name__}: "
          f"{error}); rerun its experiment"
      )
      del results[name]
  return _render(out, report, results)


def _render(out: pathlib.Path, report: pathlib.Path, results: dict[str, dict[str, Any]]) -> str:
  grouped = rows_by_id(results)
  known = [row.id for row in paper.ROWS]
  audits = audit_lines(results)
  if "ensemble" in results:
    audits += ensemble_lines(results["ensemble"])
  lines = [
      "# Reproduction report: Explaining and Harnessing Adversarial Examples",
      "",
      "Goodfellow, Shlens & Szegedy, ICLR 2015. Generated by `python -m "
      f"experiments.report` from `{out}`. Errors are over all evaluated examples; "
      "confidence is the mean probability of the predicted class over the "
      "mistakes; eps = 0.25 on MNIST, no clipping, unless a note says otherwise.",
      "",
      "## Summary: every row of the paper's table",
      "",
      "Where several runs measure a row, the one closest to the paper's protocol "
      "gives it; every run's numbers are in the details below.",
      "",
      *_table(
          ("id", "experiment", "paper", "measured", "run (preset, seeds)", "verdict"),
          [
              summary_line(row, strongest(grouped.get(row.id, []), results), results)
              for row in paper.ROWS
          ],
      ),
      "",
  ]
  if audits:
    lines += [
        "## Beyond the paper: the maxouts under stronger attacks",
        "",
        "Test error (MNIST test set) under the paper's FGSM and under stronger "
        "attacks: PGD with a random start, 40 steps of 2.5 eps / 40, best of 3 "
        "restarts, clipped to [0, 1]; FGSM with the model's predicted labels "
        "instead of the true ones (no label leaking); and the worst FGSM "
        "error over 20 eps in (0, eps].",
        "",
        *audits,
    ]
  if "training_study" in results:
    lines += [
        "## Beyond the paper: training eps and alpha",
        "",
        *study_lines(results["training_study"]),
    ]
  if "robust_training" in results:
    lines += [
        "## Beyond the paper: training that holds",
        "",
        *robust_lines(results["robust_training"]),
    ]
  lines += [
      *details_lines(grouped, known),
      *runs_lines(results),
      "## Figures",
      "",
      *figures(out, results, report),
  ]
  return "\n".join(lines).rstrip() + "\n"


def details_lines(grouped: dict[str, list[dict[str, Any]]], known: list[str]) -> list[str]:
  """The details: every measured row with its verdict, note and results file."""
  return [
      "## Every measured number",
      "",
      *_table(
          ("id", "metric", "paper", "measured", "verdict", "note", "results"),
          [
              [
                  row["id"],
                  row["metric"],
                  row["paper"],
                  _measured(row),
                  row["verdict"],
                  row.get("note", ""),
                  f"{row['file']}.json",
              ]
              for paper_id in known + sorted(set(grouped) - set(known))
              for row in grouped.get(paper_id, [])
          ],
      ),
      "",
  ]


def runs_lines(results: dict[str, dict[str, Any]]) -> list[str]:
  """The runs: every results file's preset, seeds, data, device and duration."""
  return [
      "## Runs",
      "",
      *_table(
          ("results", "preset", "seeds", "data", "device", "seconds"),
          [
              [
                  f"{name}.json",
                  str(content.get("config", {}).get("preset", "?")),
                  _seeds(content.get("config", {})),
                  str(content.get("config", {}).get("dataset", "mnist")),
                  str(content.get("config", {}).get("platform", "cpu")),
                  f"{content['seconds']:.0f}" if "seconds" in content else "-",
              ]
              for name, content in results.items()
          ],
      ),
      "",
  ]


def main(argv: Sequence[str] | None = None) -> None:
  """Writes the report; a one-line error and exit status 1 without a results folder."""
  parser = argparse.ArgumentParser(
      prog="python -m experiments.report",
      description="Gathers the experiments' results into a Markdown report.",
  )
  parser.add_argument(
      "--out",
      default=cli.DEFAULT_OUT,
      type=pathlib.Path,
      help=f"results folder to read (default: {cli.DEFAULT_OUT}; "
      "the committed reference results are in results)",
  )
  parser.add_argument(
      "--report", type=pathlib.Path, help="report to write (default: OUT/REPORT.md)"
  )
  args = parser.parse_args(argv)
  if not args.out.is_dir():
    cli.fail("experiments.report", f"{args.out}: no such results folder")
  report = args.report or args.out / "REPORT.md"
  if report.is_dir():
    cli.fail("experiments.report", f"--report {report} is a folder: name a file")
  text = render(args.out, report)
  try:
    files.atomic_write(report, lambda tmp: tmp.write_text(text))
  except OSError as error:
    cli.fail("experiments.report", f"--report {report}: cannot write: {error.strerror or error}")
  print(f"wrote {report}")


if __name__ == "__main__":
  main()
