"""Tests for advjax.data: IDX parsing, splits, error messages, download and tfds paths.

Synthetic IDX files are written here byte by byte with `struct`, independently of
the parser under test. Tests on the real dataset run only when ADVJAX_DATA_DIR
names a folder holding it (e.g. /work/shared/data/mnist). The download tests
serve a copy of ../shared/data/mnist over HTTP on 127.0.0.1: no internet.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import socket
import struct
import sys
import threading
import time

import numpy as np
import pytest

from advjax import data
from advjax.data import DataError
from tests.conftest import IMAGES
from tests.conftest import LABELS
from tests.conftest import TEST_IMAGES
from tests.conftest import TEST_LABELS
from tests.conftest import assert_one_line_naming
from tests.conftest import idx_bytes
from tests.conftest import write_file
from tests.conftest import write_mnist_dir

# The project's copy of MNIST, beside the repository on development machines and CI.
SHARED_MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def split_sizes(mnist: data.MNIST) -> list[int]:
  return [len(s) for s in (mnist.train, mnist.valid, mnist.test, mnist.train_full)]


@pytest.fixture
def no_env_dir(monkeypatch):
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_exactly(tmp_path, gz):
  images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
  labels = np.array([0, 9, 3, 7, 1, 1, 5], np.uint8)
  images_path = write_file(tmp_path / IMAGES, idx_bytes(images), gz)
  labels_path = write_file(tmp_path / LABELS, idx_bytes(labels), gz)

  np.testing.assert_array_equal(data.read_idx_images(images_path), images)
  np.testing.assert_array_equal(data.read_idx_labels(labels_path), labels)
  assert data.read_idx_images(images_path).dtype == np.uint8


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dir_round_trips_scaled_and_flattened(tmp_path, gz):
  arrays = write_mnist_dir(tmp_path, n_train=12, n_test=5, gz=gz)

  mnist = data.load_mnist(tmp_path)

  full = mnist.train_full
  assert full.x.shape == (12, 784) and full.x.dtype == np.float32
  assert full.y.dtype == np.int32
  assert full.x.min() == 0.0 and full.x.max() == 1.0
  as_bytes = lambda x: np.rint(x * 255).astype(np.uint8)  # noqa: E731
  np.testing.assert_array_equal(as_bytes(full.x), arrays[IMAGES].reshape(12, 784))
  np.testing.assert_array_equal(full.y, arrays[LABELS])
  np.testing.assert_array_equal(as_bytes(mnist.test.x), arrays[TEST_IMAGES].reshape(5, 784))
  np.testing.assert_array_equal(mnist.test.y, arrays[TEST_LABELS])
  # 12 training images split 5/6 : 1/6, in order.
  assert (len(mnist.train), len(mnist.valid)) == (10, 2)
  np.testing.assert_array_equal(mnist.train.x, full.x[:10])
  np.testing.assert_array_equal(mnist.valid.y, full.y[10:])


def test_plain_file_preferred_over_gz(tmp_path):
  arrays = write_mnist_dir(tmp_path, gz=True)
  # A plain copy with different labels must win: it is the one that is read.
  write_file(tmp_path / LABELS, idx_bytes((arrays[LABELS] + 1) % 10), gz=False)

  mnist = data.load_idx_dir(tmp_path)

  np.testing.assert_array_equal(mnist.train_full.y, (arrays[LABELS] + 1) % 10)


# ---------------------------------------------------------------------------
# IDX errors: each a one-line DataError naming the file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_images_file(tmp_path, gz):
  images = np.zeros((3, 28, 28), np.uint8)
  path = write_file(tmp_path / IMAGES, idx_bytes(images)[:-5], gz)
  with pytest.raises(DataError) as err:
    data.read_idx_images(path)
  assert_one_line_naming(err, str(path), "truncated")


def test_truncated_header(tmp_path):
  path = write_file(tmp_path / LABELS, struct.pack(">I", 2049) + b"\x00\x00", gz=False)
  with pytest.raises(DataError) as err:
    data.read_idx_labels(path)
  assert_one_line_naming(err, str(path), "truncated")


def test_extra_bytes_after_data(tmp_path):
  path = write_file(tmp_path / LABELS, idx_bytes(np.arange(4)) + b"\x00", gz=True)
  with pytest.raises(DataError) as err:
    data.read_idx_labels(path)
  assert_one_line_naming(err, str(path), "1 bytes beyond")


def test_bad_magic(tmp_path):
  path = write_file(tmp_path / IMAGES, idx_bytes(np.zeros((2, 28, 28)), magic=2052), gz=True)
  with pytest.raises(DataError) as err:
    data.read_idx_images(path)
  assert_one_line_naming(err, str(path), "magic", "2052", "2051")


def test_swapped_files_caught_by_magic(tmp_path):
  path = write_file(tmp_path / LABELS, idx_bytes(np.zeros((2, 28, 28))), gz=False)
  with pytest.raises(DataError) as err:
    data.read_idx_labels(path)
  assert_one_line_naming(err, str(path), "magic", "2051", "2049")


def test_gzip_content_without_gz_name_gets_hint(tmp_path):
  path = tmp_path / LABELS
  path.write_bytes(gzip.compress(idx_bytes(np.arange(3))))
  with pytest.raises(DataError) as err:
    data.read_idx_labels(path)
  assert_one_line_naming(err, str(path), "magic", "gzip")


@pytest.mark.parametrize(
    "content",
    [b"this is not gzip data", gzip.compress(idx_bytes(np.zeros((4, 28, 28))))[:-20]],
    ids=["not-gzip", "truncated-gzip"],
)
def test_bad_gzip(tmp_path, content):
  path = tmp_path / (IMAGES + ".gz")
  path.write_bytes(content)
  with pytest.raises(DataError) as err:
    data.read_idx_images(path)
  assert_one_line_naming(err, str(path), "gzip")


def test_wrong_image_size(tmp_path):
  path = write_file(tmp_path / IMAGES, idx_bytes(np.zeros((2, 27, 28))), gz=False)
  with pytest.raises(DataError) as err:
    data.read_idx_images(path)
  assert_one_line_naming(err, str(path), "27x28", "28x28")


def test_label_out_of_range(tmp_path):
  path = write_file(tmp_path / LABELS, idx_bytes(np.array([1, 2, 10, 3])), gz=True)
  with pytest.raises(DataError) as err:
    data.read_idx_labels(path)
  assert_one_line_naming(err, str(path), "label 10", "index 2", "0..9")


def test_count_mismatch(tmp_path):
  write_mnist_dir(tmp_path, n_train=6)
  labels_path = write_file(tmp_path / LABELS, idx_bytes(np.zeros(5)), gz=True)
  with pytest.raises(DataError) as err:
    data.load_idx_dir(tmp_path)
  images_path = tmp_path / (IMAGES + ".gz")
  assert_one_line_naming(err, str(images_path), str(labels_path), "6 images", "5 labels")


@pytest.mark.parametrize("missing", [IMAGES, LABELS, TEST_IMAGES, TEST_LABELS])
def test_missing_file(tmp_path, missing):
  write_mnist_dir(tmp_path)
  (tmp_path / (missing + ".gz")).unlink()
  with pytest.raises(DataError) as err:
    data.load_mnist(tmp_path)
  assert_one_line_naming(err, str(tmp_path / missing), "not found")


def test_read_missing_file_directly(tmp_path):
  with pytest.raises(DataError) as err:
    data.read_idx_labels(tmp_path / "nope.gz")
  assert_one_line_naming(err, str(tmp_path / "nope.gz"), "not found")


def test_missing_folder(tmp_path):
  folder = tmp_path / "no-such-folder"
  with pytest.raises(DataError) as err:
    data.load_mnist(folder)
  assert_one_line_naming(err, str(folder), "does not exist", "--data-dir", "ADVJAX_DATA_DIR")


def test_missing_folder_from_env_says_so(tmp_path, monkeypatch):
  folder = tmp_path / "no-such-folder"
  monkeypatch.setenv(data.DATA_DIR_ENV, str(folder))
  with pytest.raises(DataError) as err:
    data.load_mnist()
  assert_one_line_naming(err, str(folder), "from ADVJAX_DATA_DIR", "--data-dir")


def test_data_error_is_value_error():
  assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------
# Resolution order
# ---------------------------------------------------------------------------


def test_explicit_dir_beats_env(tmp_path, monkeypatch):
  for sub, n_train in (("a", 6), ("b", 12)):
    (tmp_path / sub).mkdir()
    write_mnist_dir(tmp_path / sub, n_train=n_train)
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "b"))

  assert len(data.load_mnist(tmp_path / "a").train_full) == 6
  assert len(data.load_mnist(str(tmp_path / "a")).train_full) == 6
  assert len(data.load_mnist().train_full) == 12


def test_no_dir_and_no_env_downloads(monkeypatch, no_env_dir):
  calls = []
  monkeypatch.setattr(data, "download_mnist", lambda name: calls.append(name) or "downloaded")
  monkeypatch.setattr(data, "load_tfds", lambda name: pytest.fail("tfds.load path taken"))

  assert data.load_mnist(name="fashion_mnist") == "downloaded"
  assert calls == ["fashion_mnist"]


@pytest.mark.parametrize("text", ["", "  "])
def test_empty_data_dir_is_an_error_not_the_current_folder(monkeypatch, tmp_path, text):
  # The current folder holds MNIST: an empty name must still not read it.
  write_mnist_dir(tmp_path)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(data, "download_mnist", lambda name: pytest.fail("downloaded"))

  with pytest.raises(DataError) as err:
    data.load_mnist(text)
  assert_one_line_naming(err, "empty", repr(text), "--data-dir", "'.' is the current folder")


@pytest.mark.parametrize("text", ["", " \t"])
def test_empty_data_dir_env_is_an_error_not_unset(monkeypatch, tmp_path, text):
  write_mnist_dir(tmp_path)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(data.DATA_DIR_ENV, text)
  monkeypatch.setattr(data, "download_mnist", lambda name: pytest.fail("downloaded"))

  with pytest.raises(DataError) as err:
    data.load_mnist()
  assert_one_line_naming(err, "empty", "from ADVJAX_DATA_DIR", "give neither to download")


def test_unknown_name_lists_known_names(tmp_path):
  write_mnist_dir(tmp_path)
  for kwargs in ({}, {"data_dir": tmp_path}):
    with pytest.raises(ValueError, match="mnist, fashion_mnist"):
      data.load_mnist(name="cifar10", **kwargs)


# ---------------------------------------------------------------------------
# split_mnist and binary_subset
# ---------------------------------------------------------------------------


def _raw(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def test_split_mnist_sizes_and_scaling():
  train_x, train_y = _raw(20)
  test_x, test_y = _raw(4, seed=1)

  mnist = data.split_mnist(train_x, train_y, test_x, test_y, n_train=15)

  assert split_sizes(mnist) == [15, 5, 4, 20]
  for split in (mnist.train, mnist.valid, mnist.test, mnist.train_full):
    assert split.x.dtype == np.float32 and split.x.shape[1] == 784
    assert split.y.dtype == np.int32
    assert 0.0 <= split.x.min() and split.x.max() <= 1.0
  np.testing.assert_array_equal(mnist.train_full.x, train_x.reshape(20, 784) / np.float32(255))
  np.testing.assert_array_equal(mnist.train.x, mnist.train_full.x[:15])
  np.testing.assert_array_equal(mnist.valid.x, mnist.train_full.x[15:])
  np.testing.assert_array_equal(mnist.valid.y, train_y[15:])


def test_split_mnist_default_is_five_sixths():
  x, y = _raw(60)
  mnist = data.split_mnist(x, y, x[:3], y[:3])
  assert (len(mnist.train), len(mnist.valid)) == (50, 10)


def test_split_mnist_accepts_channel_and_flat_layouts():
  x, y = _raw(6)
  expected = data.split_mnist(x, y, x, y, n_train=3).train_full.x
  for layout in (x[..., None], x.reshape(6, 784)):
    got = data.split_mnist(layout, y, layout, y, n_train=3).train_full.x
    np.testing.assert_array_equal(got, expected)


def test_split_arrays_are_read_only():
  x, y = _raw(6)
  mnist = data.split_mnist(x, y, x, y, n_train=3)
  # train is a view of train_full, so a write through one would corrupt the other.
  with pytest.raises(ValueError):
    mnist.train.x[0, 0] = 0.5
  with pytest.raises(ValueError):
    mnist.test.y[0] = 1


@pytest.mark.parametrize("n_train", [0, 6, 7, -1])
def test_split_mnist_rejects_empty_train_or_valid(n_train):
  x, y = _raw(6)
  with pytest.raises(ValueError, match="n_train"):
    data.split_mnist(x, y, x, y, n_train=n_train)


def test_split_mnist_rejects_bad_inputs():
  x, y = _raw(6)
  with pytest.raises(ValueError, match="uint8"):
    data.split_mnist(x.astype(np.float32), y, x, y, n_train=3)
  with pytest.raises(ValueError, match="28x28"):
    data.split_mnist(x[:, :27], y, x, y, n_train=3)
  with pytest.raises(ValueError, match="0..9"):
    data.split_mnist(x, y + 10, x, y, n_train=3)
  with pytest.raises(ValueError, match="labels"):
    data.split_mnist(x, y[:5], x, y, n_train=3)


def test_binary_subset():
  x = np.arange(6 * 784, dtype=np.float32).reshape(6, 784)
  split = data.Split(x, np.array([3, 1, 7, 7, 3, 9], np.int32))

  subset = data.binary_subset(split)

  assert subset.y.dtype == np.float32
  np.testing.assert_array_equal(subset.y, [1, -1, -1, 1])
  np.testing.assert_array_equal(subset.x, x[[0, 2, 3, 4]])


def test_binary_subset_other_classes_and_errors():
  split = data.Split(np.zeros((4, 784), np.float32), np.array([0, 1, 2, 1], np.int32))
  np.testing.assert_array_equal(data.binary_subset(split, positive=1, negative=0).y, [-1, 1, 1])
  with pytest.raises(ValueError, match="differ"):
    data.binary_subset(split, positive=1, negative=1)


def test_split_checks_shapes():
  with pytest.raises(ValueError, match="Split"):
    data.Split(np.zeros((3, 784), np.float32), np.zeros(2, np.int32))


# ---------------------------------------------------------------------------
# tensorflow-datasets
# ---------------------------------------------------------------------------


def _forbid_network_probe(monkeypatch):
  def probe(*args, **kwargs):
    raise AssertionError("prepared (mocked) data must not probe the network")

  monkeypatch.setattr(data, "_network_available", probe)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_under_mock_data(monkeypatch, no_env_dir, name):
  tfds = pytest.importorskip("tensorflow_datasets")
  _forbid_network_probe(monkeypatch)

  with tfds.testing.mock_data(num_examples=12):
    mnist = data.load_tfds(name)

  # Mock data has 12 examples per split: 5/6 of the training ones train.
  assert split_sizes(mnist) == [10, 2, 12, 12]
  for split in (mnist.train, mnist.valid, mnist.test, mnist.train_full):
    assert split.x.shape[1] == 784 and split.x.dtype == np.float32
    assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert split.y.dtype == np.int32 and set(split.y) <= set(range(10))
  np.testing.assert_array_equal(mnist.train.x, mnist.train_full.x[:10])
  # Scaled from uint8: every value is k/255.
  assert np.all(np.rint(mnist.train_full.x * 255) / np.float32(255) == mnist.train_full.x)


def test_tfds_prepared_check(monkeypatch, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.core import constants  # pylint: disable=import-outside-toplevel

  # An empty cache: nothing is prepared, and checking must not download.
  monkeypatch.setattr(constants, "DATA_DIR", str(tmp_path))
  assert not data._tfds_prepared(tfds, "mnist")
  assert not any(tmp_path.iterdir())
  # Under mock_data, builder.is_prepared() is False yet reading works: count it ready.
  with tfds.testing.mock_data(num_examples=2):
    assert data._tfds_prepared(tfds, "mnist")


def record_probes(monkeypatch, reachable: bool) -> list[tuple[str, int]]:
  """Replaces the network probe by one that answers ``reachable`` and records its targets."""
  probes = []
  monkeypatch.setattr(
      data,
      "_network_available",
      lambda host, port, **kwargs: probes.append((host, port)) or reachable,
  )
  return probes


@pytest.mark.parametrize(
    "name, host, port",
    [
        ("mnist", "storage.googleapis.com", 443),
        ("fashion_mnist", "fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    ],
)
def test_tfds_offline_fails_fast(monkeypatch, no_env_dir, name, host, port):
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(data, "_tfds_prepared", lambda tfds, name: False)
  probes = record_probes(monkeypatch, reachable=False)

  start = time.monotonic()
  with pytest.raises(DataError) as err:
    data.load_tfds(name)
  assert time.monotonic() - start < 5
  assert probes == [(host, port)]
  assert_one_line_naming(err, name, "--data-dir", "ADVJAX_DATA_DIR", f"{host}:{port}")


def test_tfds_without_tensorflow_says_what_to_install(monkeypatch, no_env_dir):
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(data, "_tfds_prepared", lambda tfds, name: False)
  record_probes(monkeypatch, reachable=True)
  monkeypatch.setattr(data, "_tensorflow_available", lambda: False)

  with pytest.raises(DataError) as err:
    data.load_tfds("fashion_mnist")
  assert_one_line_naming(
      err, "fashion_mnist", "TensorFlow", "pip install 'advjax[tfds]'", "--data-dir"
  )


@pytest.mark.parametrize("load", [data.load_mnist, data.load_tfds], ids=["download", "tfds"])
def test_without_tensorflow_datasets_says_what_to_do(monkeypatch, no_env_dir, load):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(DataError) as err:
    load()
  assert_one_line_naming(
      err, "tensorflow-datasets", "pip install tensorflow-datasets", "--data-dir"
  )


def test_network_probe_reports_open_and_unreachable_ports():
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert data._network_available("127.0.0.1", port, timeout=1.0)
  # The listener is closed now, so nothing accepts on that port.
  start = time.monotonic()
  assert not data._network_available("127.0.0.1", port, timeout=1.0)
  assert time.monotonic() - start < 2


# ---------------------------------------------------------------------------
# Download through TFDS's download manager, from a local HTTP server
# ---------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args) -> None:
    pass


@pytest.fixture
def mnist_server(tmp_path):
  """Serves a copy of ../shared/data/mnist's four .gz files on 127.0.0.1.

  Yields:
    (the folder URL, without its trailing slash; the folder served).
  """
  if not SHARED_MNIST.is_dir():
    pytest.skip(f"{SHARED_MNIST} (the project's copy of MNIST) is not here")
  folder = tmp_path / "served"
  folder.mkdir()
  for base in data.IDX_FILES.values():
    shutil.copy(SHARED_MNIST / f"{base}.gz", folder)
  handler = functools.partial(_QuietHandler, directory=str(folder))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_port}", folder
  server.shutdown()
  server.server_close()
  thread.join()


@pytest.fixture
def tfds_cache(tmp_path, monkeypatch):
  """Points tensorflow-datasets' data folder at an empty one; returns its downloads folder."""
  constants = pytest.importorskip("tensorflow_datasets.core.constants")
  monkeypatch.setattr(constants, "DATA_DIR", str(tmp_path / "tfds"))
  return tmp_path / "tfds" / "downloads"


def digests(mnist: data.MNIST) -> list[str]:
  return [
      hashlib.sha256(array.tobytes()).hexdigest()
      for split in (mnist.train_full, mnist.test)
      for array in (split.x, split.y)
  ]


def test_download_arrives_through_tfds_without_tensorflow(
    monkeypatch, no_env_dir, mnist_server, tfds_cache
):
  url, served = mnist_server
  monkeypatch.setenv("ADVJAX_MNIST_URL", url)
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # Any import of it fails.
  real_probe = data._network_available
  probes = []
  monkeypatch.setattr(
      data,
      "_network_available",
      lambda host, port: probes.append((host, port)) or real_probe(host, port),
  )

  downloaded = data.load_mnist()

  assert split_sizes(downloaded) == [50_000, 10_000, 10_000, 60_000]
  # The probe asked the host actually used.
  assert probes == [("127.0.0.1", int(url.rsplit(":", 1)[1]))]
  got = digests(downloaded)
  del downloaded
  assert got == digests(data.load_idx_dir(SHARED_MNIST))
  # Cached where tensorflow-datasets caches, each beside its .INFO record.
  assert len(list((tfds_cache / "mnist").glob("*.gz"))) == 4
  assert len(list((tfds_cache / "mnist").glob("*.gz.INFO"))) == 4

  # From the cache afterwards: no probe, no server.
  for path in served.iterdir():
    path.unlink()
  _forbid_network_probe(monkeypatch)
  assert digests(data.download_mnist(base_url=url + "/")) == got


def test_a_corrupted_download_is_refused_and_fetched_again(
    monkeypatch, no_env_dir, mnist_server, tfds_cache
):
  url, served = mnist_server
  good = (served / f"{TEST_LABELS}.gz").read_bytes()
  bad = bytearray(good)
  bad[len(bad) // 2] ^= 0xFF
  (served / f"{TEST_LABELS}.gz").write_bytes(bytes(bad))

  with pytest.raises(DataError) as err:
    data.download_mnist(base_url=url)
  assert_one_line_naming(
      err,
      f"{url}/{TEST_LABELS}.gz",
      "SHA-256",
      hashlib.sha256(good).hexdigest(),
      "downloads it again",
  )
  assert not list((tfds_cache / "mnist").glob(f"*{TEST_LABELS}*"))

  (served / f"{TEST_LABELS}.gz").write_bytes(good)
  assert len(data.download_mnist(base_url=url).test) == 10_000


def test_fashion_mnist_has_its_own_checksums(monkeypatch, no_env_dir, mnist_server, tfds_cache):
  url, _ = mnist_server
  monkeypatch.setenv("ADVJAX_FASHION_MNIST_URL", url)
  with pytest.raises(DataError) as err:
    data.load_mnist(name="fashion_mnist")
  assert_one_line_naming(err, f"{url}/{IMAGES}.gz", "fashion_mnist", "SHA-256")


@pytest.mark.parametrize(
    "name, host, port",
    [
        ("mnist", "storage.googleapis.com", 443),
        ("fashion_mnist", "fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    ],
)
def test_download_offline_fails_fast(monkeypatch, no_env_dir, tfds_cache, name, host, port):
  probes = record_probes(monkeypatch, reachable=False)

  with pytest.raises(DataError) as err:
    data.load_mnist(name=name)
  assert probes == [(host, port)]
  assert_one_line_naming(
      err, name, f"{host}:{port}", "unreachable", "--data-dir", "ADVJAX_DATA_DIR"
  )


def test_download_probes_the_url_it_is_given_and_fails_within_seconds(
    monkeypatch, no_env_dir, tfds_cache
):
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
  # Nothing listens on that port now.
  monkeypatch.setenv("ADVJAX_MNIST_URL", f"http://127.0.0.1:{port}/mnist/")

  start = time.monotonic()
  with pytest.raises(DataError) as err:
    data.load_mnist()
  assert time.monotonic() - start < 5
  assert_one_line_naming(err, f"127.0.0.1:{port}", "unreachable", "--data-dir")


@pytest.mark.parametrize(
    "value, needle",
    [
        ("", "ADVJAX_MNIST_URL is empty"),
        ("   ", "ADVJAX_MNIST_URL is empty"),
        ("storage.googleapis.com/cvdf-datasets/mnist", "not an http:// or https:// URL"),
        ("ftp://example.org/mnist/", "not an http:// or https:// URL"),
    ],
)
def test_bad_download_url_is_one_line(monkeypatch, no_env_dir, value, needle):
  monkeypatch.setenv("ADVJAX_MNIST_URL", value)
  _forbid_network_probe(monkeypatch)
  with pytest.raises(DataError) as err:
    data.load_mnist()
  assert_one_line_naming(err, needle, repr(value))


def test_empty_base_url_argument_says_so(no_env_dir):
  with pytest.raises(DataError) as err:
    data.download_mnist(base_url="")
  assert_one_line_naming(err, "base_url is empty", "storage.googleapis.com")


def test_known_mnist_checksums_match_the_shared_copy():
  if not SHARED_MNIST.is_dir():
    pytest.skip(f"{SHARED_MNIST} (the project's copy of MNIST) is not here")
  remote = data._REMOTES["mnist"]
  sums = dict(
      line.split()[::-1]
      for line in (SHARED_MNIST / "SHA256SUMS.decompressed").read_text().splitlines()
  )
  assert remote.idx_sha256 == sums
  for base in data.IDX_FILES.values():
    content = gzip.decompress((SHARED_MNIST / f"{base}.gz").read_bytes())
    assert hashlib.sha256(content).hexdigest() == remote.idx_sha256[base], base


# ---------------------------------------------------------------------------
# The real dataset (ADVJAX_DATA_DIR, e.g. /work/shared/data/mnist)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist():
  folder = os.environ.get(data.DATA_DIR_ENV)
  if not folder:
    pytest.skip(f"set {data.DATA_DIR_ENV} to a folder holding the MNIST IDX files")
  return data.load_mnist(folder)


def test_real_shapes_and_range(real_mnist):
  sizes = {"train": 50_000, "valid": 10_000, "test": 10_000, "train_full": 60_000}
  for name, size in sizes.items():
    split = getattr(real_mnist, name)
    assert split.x.shape == (size, 784) and split.x.dtype == np.float32, name
    assert split.y.shape == (size,) and split.y.dtype == np.int32, name
    assert split.x.min() == 0.0 and split.x.max() == 1.0, name


def test_real_split_is_train_full_in_order(real_mnist):
  full = real_mnist.train_full
  np.testing.assert_array_equal(full.x[:50_000], real_mnist.train.x)
  np.testing.assert_array_equal(full.y[:50_000], real_mnist.train.y)
  np.testing.assert_array_equal(full.x[50_000:], real_mnist.valid.x)
  np.testing.assert_array_equal(full.y[50_000:], real_mnist.valid.y)


def test_real_label_histograms(real_mnist):
  # MNIST's classes are roughly balanced: 5,421..6,742 per class in the
  # training set, 892..1,135 in the test set.
  train_counts = np.bincount(real_mnist.train_full.y, minlength=10)
  test_counts = np.bincount(real_mnist.test.y, minlength=10)
  assert train_counts.sum() == 60_000 and test_counts.sum() == 10_000
  assert train_counts.min() > 5_000 and train_counts.max() < 7_000
  assert test_counts.min() > 800 and test_counts.max() < 1_200
  valid_counts = np.bincount(real_mnist.valid.y, minlength=10)
  assert valid_counts.min() > 800 and valid_counts.max() < 1_200


def test_real_binary_subset(real_mnist):
  subset = data.binary_subset(real_mnist.train)
  counts = np.bincount(real_mnist.train.y, minlength=10)
  assert len(subset) == counts[3] + counts[7]
  assert (subset.y == 1).sum() == counts[3] and (subset.y == -1).sum() == counts[7]
