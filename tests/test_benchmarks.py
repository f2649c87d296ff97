"""Smoke test of ``python -m benchmarks``: a tiny run writes complete, consistent results.

It checks structure and correctness (the peers' adversarial examples equal
advjax's, the sweep equals the loop, the compiled epoch ends where the
per-step loop does), never timings, and runs on random images so that it
needs no data set. Peers that are not installed show as rows that say so,
which is checked by hiding one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import pytest

from advjax import data as advjax_data
import benchmarks
from benchmarks import __main__ as cli
from benchmarks import base
from benchmarks import items
from benchmarks import peers as peers_lib
from benchmarks import report
from benchmarks import suite
from benchmarks.items import _epochs
from benchmarks.items import autoattack
from benchmarks.items import epoch
from benchmarks.items import fgsm
from benchmarks.items import members
from benchmarks.items import wide_epoch

# foolbox 3.3.4 imports a SciPy namespace that SciPy deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*scipy.ndimage.filters.*:DeprecationWarning")

TINY = dataclasses.replace(
    benchmarks.QUICK,
    units=8,
    pieces=2,
    batch=10,
    test_examples=40,
    attack_batch=20,
    sweep_eps=3,
    sweep_batch=20,
    members=2,
    train_steps=2,
    step_repeats=1,
    attack_repeats=1,
    sweep_repeats=1,
    ensemble_repeats=1,
    epoch_repeats=1,
    members_repeats=1,
    seeds=2,
    study_eps=(0.0, 0.25),
    wide_units=12,
    wide_on_cpu=True,
    peak_sizes=(64,),
    peak_repeats=1,
)
# Two seeds and two eps: the seeds item and the eps study share one compiled program.
HIDDEN = "torchattacks"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], pathlib.Path]:
  out = tmp_path_factory.mktemp("benchmarks")
  load_peers = peers_lib.load_peers

  def without_one() -> dict[str, peers_lib.Peer]:
    found = load_peers()
    found[HIDDEN] = peers_lib.Peer(HIDDEN, None, None, "hidden by the test")
    return found

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(base.peers_lib, "load_peers", without_one)
    entry = benchmarks.run(TINY, out, data_dir=None, log=lambda line: None)
  return entry, out


def _rows(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
  return entry["benchmarks"][key]["rows"]


def test_results_json_holds_every_item(run):
  entry, out = run
  saved = json.loads((out / "results.json").read_text())
  platform = entry["machine"]["platform"]
  assert list(saved) == [platform]
  saved = saved[platform]
  assert {
      "machine",
      "config",
      "data",
      "model",
      "peers",
      "benchmarks",
      "seconds",
      "load_average_end",
      "matmul_peak",
  } <= set(saved)
  assert list(saved["benchmarks"]) == items.keys()
  assert saved["config"]["units"] == TINY.units
  assert saved["matmul_peak"]["jax"]["gflops"] > 0
  for key, section in saved["benchmarks"].items():
    assert {"title", "target", "gpu_target", "measured", "met", "rows", "ratio_meaning"} <= set(
        section
    )
    for row in section["rows"]:
      if row["status"] == "ok":
        assert row["seconds"] > 0 and row["ratio"] > 0 and row["peak_bytes"] > 0
        # AutoAttack's loops run data-dependent trip counts: no FLOP count for it.
        if not key.startswith("autoattack"):
          assert row["flops"] > 0 and row["gflops"] > 0


def test_markdown_names_the_device_and_every_item(run):
  entry, out = run
  text = (out / "RESULTS.md").read_text()
  assert entry["machine"]["device"] in text
  for section in entry["benchmarks"].values():
    assert section["title"] in text


def test_a_missing_peer_is_a_row_not_a_gap(run):
  entry, _ = run
  assert "not available: hidden by the test" in entry["peers"][HIDDEN]
  missing = [row for row in _rows(entry, "fgsm") if HIDDEN in row["name"]]
  if entry["peers"]["torch"].startswith("not available"):
    pytest.skip("torch is not installed: every PyTorch row is missing anyway")
  assert len(missing) == 1 and missing[0]["status"].startswith("not run")
  assert missing[0]["seconds"] is None


def test_peers_make_the_same_adversarial_examples(run):
  entry, _ = run
  checked = [row for row in _rows(entry, "fgsm") if row["cross_check"] is not None]
  if not checked:
    pytest.skip("no peer is installed")
  for row in checked:
    assert row["cross_check"]["passed"], row


def test_fgsm_under_the_cpu_recipe_makes_advjax_s_examples(run):
  entry, _ = run
  (recipe,) = [row for row in _rows(entry, "fgsm") if row["name"] == fgsm.RECIPE]
  assert recipe["cross_check"]["passed"], recipe


def test_item_3_is_judged_by_its_fastest_peer_not_by_advjax_s_recipe():
  rows = [
      base.Row("advjax.fgsm (jit)", ratio=1.0),
      base.Row(fgsm.RECIPE, ratio=0.6),
      base.Row("plain PyTorch", ratio=1.3),
      base.Row("torchattacks", ratio=2.0),
      base.Row("foolbox", status="not run: hidden"),
  ]
  section = fgsm.judge(base.Section("3. FGSM", "ratio", "advjax fastest", rows))
  assert section.measured == 1.3 and section.met


def test_sweeps_equal_the_loop(run):
  entry, _ = run
  for row in _rows(entry, "sweep")[1:]:
    # One example flipping at a rounding-level tie is the most allowed.
    assert row["cross_check"]["max_error_difference_vs_loop"] <= 1 / TINY.test_examples


def test_the_compiled_epoch_ends_where_the_per_step_loop_does(run):
  entry, _ = run
  *rows, back_to_back = _rows(entry, "epoch")
  # The library's programs, then both compiled with the CPU recipe.
  assert [row["name"].endswith(", CPU recipe") for row in rows] == [False, False, True, True]
  # The same steps without the loop between them: bit for bit the per-step loop's parameters.
  assert back_to_back["name"] == epoch.BACK_TO_BACK
  assert back_to_back["cross_check"]["max_param_difference"] == 0
  for looped, compiled in zip(rows[::2], rows[1::2]):
    check = compiled["cross_check"]
    assert check["passed"], check
    assert check["max_param_difference"] <= _epochs.PARAM_TOLERANCE * check["largest_param"]
    assert check["loss_difference"] < 1e-4
    assert looped["flops"] == compiled["flops"]  # The same work, timed two ways.
  assert entry["benchmarks"]["epoch"]["measured"] == pytest.approx(rows[1]["ratio"])


def test_the_autoattack_curve_equals_separate_calls(run):
  entry, _ = run
  _, vmapped = _rows(entry, "autoattack_curve")
  assert vmapped["cross_check"] == {"examples_differing": 0}
  ours, *theirs = _rows(entry, "autoattack")
  assert ours["status"] == "ok" and "robust accuracy" in ours["note"]
  (recipe,) = [row for row in theirs if row["name"] == autoattack.RECIPE]
  assert recipe["note"].startswith(ours["note"].split(";")[0])  # the same robust accuracy
  theirs.remove(recipe)
  assert all(HIDDEN in row["name"] and row["status"].startswith("not run") for row in theirs)


@pytest.mark.parametrize("key", ["seeds_epoch", "eps_study_epoch"])
def test_each_member_is_its_own_run_alone(run, key):
  entry, _ = run
  sequential, in_turn, vmapped = _rows(entry, key)
  # On a CPU, the same bits under XLA's default code generator (test_train proves it);
  # the suite's faster one rounds a few operations differently from one program to another.
  same = in_turn["cross_check"]
  assert same["max_param_difference"] <= 1e-6 * same["largest_param"], same
  check = vmapped["cross_check"]
  assert check["passed"], check
  assert check["min_ratio"] >= _epochs.IDENTIFICATION_MARGIN  # member by member
  assert sequential["flops"] == in_turn["flops"] == vmapped["flops"]


def test_the_eps_study_gives_each_member_its_eps(run):
  entry, _ = run
  assert f"eps {', '.join(f'{e:g}' for e in TINY.study_eps)}" in (
      entry["benchmarks"]["eps_study_epoch"]["title"]
  )
  assert _rows(entry, "eps_study_epoch")[1]["name"].startswith(
      f"one compiled epoch of {len(TINY.study_eps)} "
  )
  assert base.FULL.study_eps == base.QUICK.study_eps == (0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def test_the_wide_epoch_runs_where_the_config_asks(run):
  entry, _ = run
  (row,) = _rows(entry, "wide_epoch")
  assert row["status"] == "ok" and f"maxout {TINY.wide_units}x" in (
      entry["benchmarks"]["wide_epoch"]["title"]
  )


def test_without_a_gpu_run_the_report_lists_the_gpu_targets(run):
  _, out = run
  text = (out / "RESULTS.md").read_text()
  gpu = text[text.index("## GPU: not measured") :]
  for seconds in (epoch.GPU_EPOCH_SECONDS, members.GPU_SEEDS_SECONDS, wide_epoch.GPU_WIDE_SECONDS):
    assert f"<= {seconds} s (GPU)" in gpu


@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_empty_data_folder_is_an_error(how, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(advjax_data.DATA_DIR_ENV, raising=False)
  argv = ["--quick", "--out", str(tmp_path)]
  if how == "env":
    monkeypatch.setenv(advjax_data.DATA_DIR_ENV, " ")
  else:
    argv += ["--data-dir", ""]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 1
  message = capsys.readouterr().err
  assert message.count("\n") == 1 and "is empty text" in message
  assert (advjax_data.DATA_DIR_ENV if how == "env" else "--data-dir") in message
  assert not any(tmp_path.iterdir())


def test_a_missing_data_folder_is_an_error(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(advjax_data.DATA_DIR_ENV, raising=False)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--quick", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nowhere")])
  assert exit_info.value.code == 1
  assert "does not exist" in capsys.readouterr().err.splitlines()[-1]


def test_rerun_keeps_other_devices(run, tmp_path):
  entry, out = run
  other = dict(entry, machine=dict(entry["machine"], platform="other", device="Other chip"))
  (tmp_path / "results.json").write_text((out / "results.json").read_text())
  report.write(other, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) == {entry["machine"]["platform"], "other"}
  text = (tmp_path / "RESULTS.md").read_text()
  assert entry["machine"]["device"] in text and "Other chip" in text


def test_only_reruns_its_items_into_the_last_run(run, tmp_path):
  entry, out = run
  (tmp_path / "results.json").write_text((out / "results.json").read_text())
  sweep = dict(entry["benchmarks"]["sweep"], measured_text="0.01x")
  rerun = dict(entry, only=["sweep"], date="2026-12-06", repeat=3, benchmarks={"sweep": sweep})
  report.write(rerun, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())[entry["machine"]["platform"]]
  assert list(saved["benchmarks"]) == items.keys()  # the other items stay, in their order
  assert saved["benchmarks"]["sweep"]["measured_text"] == "0.01x"
  rerun = saved["benchmarks"]["sweep"]["rerun"]
  assert (rerun["date"], rerun["device"]) == ("2026-12-06", entry["machine"]["device"])
  for key in set(items.keys()) - {"sweep"}:
    assert saved["benchmarks"][key] == entry["benchmarks"][key]
  text = (tmp_path / "RESULTS.md").read_text()
  assert (
      f"Rerun alone on 2026-12-06, {entry['machine']['device']} "
      "(`python -m benchmarks --only sweep --repeat 3`)"
  ) in text
  assert f"- rerun alone since, on {entry['machine']['device']}, 2026-12-06: items 4 (" in text


def test_only_chooses_the_items_of_its_keys(tmp_path, capsys):
  chosen = suite._chosen(["autoattack", "eps_study_epoch"])  # pylint: disable=protected-access
  assert [item.keys for item in chosen] == [("seeds_epoch", "eps_study_epoch"), ("autoattack",)]
  with pytest.raises(ValueError, match="unknown benchmark keys \\['nope'\\]"):
    benchmarks.run(TINY, None, only=["nope"])
  with pytest.raises(SystemExit):
    cli.main(["--quick", "--out", str(tmp_path), "--only", "nope"])
  assert "invalid choice: 'nope'" in capsys.readouterr().err


def _timed(ratios: list[float | None], measured: float | None) -> base.Section:
  """A section of a baseline row and one row with the given ratio, judged <= 1."""
  rows = [
      base.Row("baseline", seconds=2.0, min_seconds=1.9, repeats=2, ratio=1.0),
      base.Row("ours", seconds=2.0 * (ratios[0] or 1), min_seconds=1.0, repeats=2, ratio=ratios[0]),
  ]
  section = base.Section("x", "over the baseline's", "ours / baseline <= 1.0", rows)
  return base.judge(section, measured, 1.0, at_most=True, text="{:.2f}x")


def test_repeated_runs_report_each_ratio_median_and_range():
  runs = [_timed([r], r) for r in (1.2, 0.8, 0.9)]
  combined = base.combine(runs)
  ours = combined.rows[1]
  assert (ours.ratio, ours.ratio_min, ours.ratio_max) == (0.9, 0.8, 1.2)
  assert ours.seconds == pytest.approx(1.8) and ours.repeats == 6 and ours.min_seconds == 1.0
  assert combined.measured == 0.9 and combined.met  # the median is judged: 0.9 <= 1
  assert combined.measured_runs == [1.2, 0.8, 0.9]
  assert combined.measured_text == "0.90x [0.80, 1.20]"
  assert runs[-1].rows[1].ratio_min is None  # the runs themselves are left as they were
  assert base.combine(runs[:1]) is runs[0]


def test_the_report_shows_median_and_range_of_repeated_runs(run):
  entry, _ = run
  section = dataclasses.asdict(base.combine([_timed([r], r) for r in (1.2, 0.8, 0.9)]))
  text = report.markdown({"cpu": dict(entry, repeat=3, benchmarks={"x": section})})
  assert "3 runs of every item" in text
  assert "| ours | 1.80 s | 0.90x [0.80, 1.20] |" in text
  assert "| x | ours / baseline <= 1.0 | 0.90x [0.80, 1.20] | yes |" in text


def test_repeat_below_one_is_an_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--quick", "--out", str(tmp_path), "--repeat", "0"])
  assert exit_info.value.code == 2 and "--repeat must be >= 1, got 0" in capsys.readouterr().err
  with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
    benchmarks.run(TINY, None, repeat=0)
