"""Smoke test of ``python -m benchmarks``: a tiny run writes complete, consistent results.

It checks structure and correctness (the peers' adversarial examples equal
advjax's, the sweep equals the loop), never timings, and runs on random images
so that it needs no data set. Peers that are not installed show as rows that
say so, which is checked by hiding one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import pytest

import benchmarks
from benchmarks import peers as peers_lib
from benchmarks import report
from benchmarks import suite

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
)
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
    patch.setattr(suite.peers_lib, "load_peers", without_one)
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
  } <= set(saved)
  assert list(saved["benchmarks"]) == list(suite.KEYS)
  assert saved["config"]["units"] == TINY.units
  for section in saved["benchmarks"].values():
    assert {"title", "target", "measured", "met", "rows", "ratio_meaning"} <= set(section)
    for row in section["rows"]:
      if row["status"] == "ok":
        assert row["seconds"] > 0 and row["ratio"] > 0 and row["peak_bytes"] > 0


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


def test_sweeps_equal_the_loop(run):
  entry, _ = run
  for row in _rows(entry, "sweep")[1:]:
    # One example flipping at a rounding-level tie is the most allowed.
    assert row["cross_check"]["max_error_difference_vs_loop"] <= 1 / TINY.test_examples


def test_rerun_keeps_other_devices(run, tmp_path):
  entry, out = run
  other = dict(entry, machine=dict(entry["machine"], platform="other", device="Other chip"))
  (tmp_path / "results.json").write_text((out / "results.json").read_text())
  report.write(other, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) == {entry["machine"]["platform"], "other"}
  text = (tmp_path / "RESULTS.md").read_text()
  assert entry["machine"]["device"] in text and "Other chip" in text
