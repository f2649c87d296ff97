"""Tests of `python -m experiments.mnist_maxout` on tiny IDX folders (and real MNIST if set).

`main` runs in-process where it can: a subprocess pays JAX's import and
every compilation again.
"""

import gzip
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import mnist_maxout

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--units", "8"]


def write_idx(folder: pathlib.Path, n_train: int = 120, n_test: int = 30) -> None:
  """Writes the four MNIST IDX files (gzipped) with random images and labels."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    header = np.array([2051, n, 28, 28], ">u4").tobytes()
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + images.tobytes())
    )
    header = np.array([2049, n], ">u4").tobytes()
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(header + labels.tobytes())
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run(
      [sys.executable, "-m", "experiments.mnist_maxout", *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def check_results(results: dict) -> None:
  for name in ("clean", "adversarial"):
    for key in ("test_error", "fgsm_error", "fgsm_confidence"):
      value = results["models"][name][key]
      assert value is None or 0 <= value <= 1, (name, key, value)
  for key in ("clean_to_adversarial", "adversarial_to_clean"):
    assert 0 <= results["transfer"][key] <= 1
  assert results["seconds"] > 0


def test_the_experiment_writes_its_results_and_a_rerun_resumes(tmp_path, capsys):
  data_dir, out = tmp_path / "mnist", tmp_path / "out"
  write_idx(data_dir)
  mnist_maxout.main([*TINY, "--data-dir", str(data_dir), "--out", str(out)])
  printed = capsys.readouterr().out
  assert "paper" in printed and "89.4%" in printed
  results = json.loads((out / "mnist_maxout.json").read_text())
  check_results(results)
  assert results["config"]["units"] == 8 and results["config"]["epochs"] == 1
  assert (out / "mnist_maxout_runs").is_dir()
  with np.load(out / "mnist_maxout_params.npz") as params:
    assert params["clean/maxout_0/kernel"].shape == (784, 40)
    assert params["adversarial/output/kernel"].shape == (8, 10)
  # The same command again finds both runs finished and only re-evaluates.
  mnist_maxout.main([*TINY, "--data-dir", str(data_dir), "--out", str(out)])
  again = json.loads((out / "mnist_maxout.json").read_text())
  assert again["models"] == results["models"]
  assert again["transfer"] == results["transfer"]


def test_eps_and_alpha_are_recorded_and_name_their_own_runs(tmp_path, capsys):
  data_dir, out = tmp_path / "mnist", tmp_path / "out"
  write_idx(data_dir)
  flags = [*TINY, "--data-dir", str(data_dir), "--out", str(out)]
  results = mnist_maxout.main([*flags, "--eps", "0.1", "--alpha", "0.3"])
  written = json.loads((out / "mnist_maxout.json").read_text())
  assert (written["config"]["eps"], written["config"]["alpha"]) == (0.1, 0.3)
  assert json.loads(json.dumps(results["config"])) == written["config"]
  assert "FGSM eps 0.1" in capsys.readouterr().out
  runs = lambda: {p.name for p in (out / "mnist_maxout_runs").iterdir()}
  first = runs()
  # Another eps or alpha trains its own runs, never restoring these.
  mnist_maxout.main([*flags, "--eps", "0.2", "--alpha", "0.3"])
  second = runs() - first
  mnist_maxout.main([*flags, "--eps", "0.2", "--alpha", "0.4"])
  third = runs() - first - second
  # eps sets the clean model's validation too; alpha only the adversarial one.
  assert len(first) == 2 and len(second) == 2 and len(third) == 1
  assert all(name.startswith("adversarial-") for name in third)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--eps", "-0.1", "--eps must be a finite number >= 0"),
        ("--eps", "nan", "--eps must be a finite number >= 0"),
        ("--alpha", "1.5", "--alpha must lie in [0, 1]"),
    ],
)
def test_bad_eps_and_alpha_are_one_line(tmp_path, flag, value, message):
  with pytest.raises(SystemExit, match=message.replace("[", "\\[")):
    mnist_maxout.main([flag, value, "--out", str(tmp_path)])


def test_another_dataset_is_named_and_not_judged_by_the_papers_numbers(tmp_path, capsys):
  data_dir, out = tmp_path / "fashion", tmp_path / "out"
  write_idx(data_dir)
  results = mnist_maxout.main(
      [*TINY, "--dataset", "fashion_mnist", "--data-dir", str(data_dir), "--out", str(out)]
  )
  printed = capsys.readouterr().out
  assert "Fashion-MNIST test set" in printed and "89.4%" not in printed
  assert results["config"]["dataset"] == "fashion_mnist" and results["rows"] == []


def test_output_goes_to_runs_unless_told(tmp_path, monkeypatch):
  data_dir = tmp_path / "mnist"
  write_idx(data_dir)
  monkeypatch.chdir(tmp_path)
  mnist_maxout.main([*TINY, "--data-dir", str(data_dir)])
  assert (tmp_path / "runs" / "mnist_maxout.json").exists()
  assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("out", ["/proc/advjax", "a-file"])
def test_an_unusable_out_is_one_line_before_the_data_loads(tmp_path, out, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "a-file").write_text("not a folder")
  loaded = []
  monkeypatch.setattr(
      mnist_maxout.common.data_lib, "load_mnist", lambda *args, **kwargs: loaded.append(1)
  )
  with pytest.raises(SystemExit) as exit_info:
    mnist_maxout.main([*TINY, "--out", out])
  message = str(exit_info.value)
  assert "\n" not in message and f"--out {out}: cannot write there" in message
  assert not loaded


@pytest.mark.parametrize("preset", ["long", "paper240"])
def test_the_protocol_presets_run_at_tiny_scale(tmp_path, preset):
  """Early stopping, retraining and (paper240) five seeds as one population."""
  data_dir, out = tmp_path / "mnist", tmp_path / "out"
  write_idx(data_dir, n_train=300)
  results = mnist_maxout.main(
      ["--preset", preset, *TINY, "--data-dir", str(data_dir), "--out", str(out)]
  )
  seeds = mnist_maxout.maxout.PRESETS[preset].seeds
  written = json.loads((out / f"mnist_maxout_{preset}.json").read_text())
  for name in ("clean", "adversarial"):
    rows = written["models"][name]["per_seed"]
    assert [row["seed"] for row in rows] == list(range(seeds))
    # One selection epoch, then as many retraining epochs as it chose.
    assert all(row["best_epoch"] == 1 and row["epochs_trained"] == 2 for row in rows)
    assert len(written["models"][name]["curves"]) == seeds
    assert set(written["audit"][name]["pgd"]) == {"0.1", "0.25"}
  assert {row["id"] for row in results["rows"]} == {"M3", "M4", "M6"}
  assert (out / "figures" / f"mnist_maxout_{preset}_validation.png").exists()


def test_the_command_line_gives_a_corrupt_idx_file_as_one_line(tmp_path):
  data_dir = tmp_path / "mnist"
  write_idx(data_dir)
  labels = data_dir / "t10k-labels-idx1-ubyte.gz"
  labels.write_bytes(labels.read_bytes()[:20])
  process = run_cli(*TINY, "--data-dir", str(data_dir), "--out", str(tmp_path))
  assert process.returncode != 0
  assert "Traceback" not in process.stderr
  lines = process.stderr.strip().splitlines()
  assert len(lines) == 1 and "t10k-labels-idx1-ubyte.gz" in lines[0]


def test_a_missing_folder_is_one_line(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  with pytest.raises(SystemExit) as exit_info:
    mnist_maxout.main([*TINY, "--data-dir", str(missing), "--out", str(tmp_path)])
  message = str(exit_info.value.code)
  assert "\n" not in message and str(missing) in message and "--data-dir" in message
  assert not (tmp_path / "mnist_maxout.json").exists()


def test_bad_flag_values_are_refused(tmp_path):
  with pytest.raises(SystemExit, match="--epochs must be >= 1"):
    mnist_maxout.main(["--epochs", "0", "--out", str(tmp_path)])


@pytest.mark.skipif(
    not os.environ.get("ADVJAX_DATA_DIR"), reason="needs the real MNIST: set ADVJAX_DATA_DIR"
)
def test_on_real_mnist_with_a_small_network(tmp_path):
  mnist_maxout.main([*TINY, "--out", str(tmp_path)])
  results = json.loads((tmp_path / "mnist_maxout.json").read_text())
  check_results(results)
  rows = results["models"]["clean"]["per_seed"]
  assert rows[0]["epochs_trained"] == 1


def test_data_parallel_run_matches_the_single_device_run(tmp_path):
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (conftest.py forces 4 CPU devices)")
  data_dir = tmp_path / "mnist"
  write_idx(data_dir)
  single = mnist_maxout.main([*TINY, "--data-dir", str(data_dir), "--out", str(tmp_path / "one")])
  sharded = mnist_maxout.main(
      [*TINY, "--data-dir", str(data_dir), "--devices", "4", "--out", str(tmp_path / "four")]
  )
  assert sharded["config"]["devices"] == 4
  for name in ("clean", "adversarial"):
    for key in ("test_error", "fgsm_error"):
      # 30 test images: one flipped prediction moves an error by 1/30.
      assert abs(sharded["models"][name][key] - single["models"][name][key]) <= 1 / 30


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_hosts_match_one_and_their_checkpoints_resume_on_one(tmp_path):
  """Two processes of 2 CPU devices each, joined by jax.distributed on localhost."""
  data_dir = tmp_path / "mnist"
  write_idx(data_dir, n_train=400)
  flags = ["--epochs", "2", "--units", "8", "--data-dir", str(data_dir)]
  coordinator = f"localhost:{free_port()}"
  env = {
      **os.environ,
      "PYTHONPATH": str(REPO),
      "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
  }
  hosts = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "experiments.mnist_maxout",
              *flags,
              "--out",
              str(tmp_path / "hosts"),
              "--devices",
              "all",
              "--coordinator",
              coordinator,
              "--num-processes",
              "2",
              "--process-id",
              str(i),
          ],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  for host in hosts:
    output = host.communicate(timeout=300)[0]
    assert host.returncode == 0, output
  two_hosts = json.loads((tmp_path / "hosts" / "mnist_maxout.json").read_text())
  assert two_hosts["config"]["devices"] == 4

  mnist_maxout.main([*flags, "--out", str(tmp_path / "one")])  # one process, one device
  with (
      np.load(tmp_path / "hosts" / "mnist_maxout_params.npz") as a,
      np.load(tmp_path / "one" / "mnist_maxout_params.npz") as b,
  ):
    assert set(a) == set(b)
    for key in a:
      np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)

  # Run alone on the hosts' folder, the command finds both runs finished,
  # restores what two processes wrote, and scores exactly what they scored.
  resumed = mnist_maxout.main([*flags, "--out", str(tmp_path / "hosts"), "--devices", "2"])
  assert resumed["models"] == two_hosts["models"]
  assert resumed["transfer"] == two_hosts["transfer"]


@pytest.mark.parametrize(
    "devices, message",
    [("3", "does not divide the batch"), ("x", "count >= 1 or 'all'"), ("64", "only")],
)
def test_bad_device_counts_are_refused(tmp_path, devices, message):
  with pytest.raises(SystemExit, match=message):
    mnist_maxout.main(["--devices", devices, "--out", str(tmp_path)])
