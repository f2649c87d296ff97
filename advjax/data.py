"""MNIST (and Fashion-MNIST) as flat float32 NumPy arrays, split as in the paper.

Two sources, one entry point (`load_mnist`):

* a folder holding the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), parsed here with NumPy;
* tensorflow-datasets, when no folder is given. It is imported only then, so
  this module costs nothing beyond NumPy at import time.

Images are float32 in [0, 1] of shape (N, 784); labels are int32 of shape (N,).
The split follows Goodfellow et al. (2015): training images 0..49,999 train,
50,000..59,999 validate, all 60,000 retrain the final model (``train_full``) and
the 10,000 t10k images test.

Example:
  >>> data = load_mnist("/work/shared/data/mnist")      # doctest: +SKIP
  >>> data.train.x.shape, data.valid.x.shape, data.test.x.shape  # doctest: +SKIP
  ((50000, 784), (10000, 784), (10000, 784))
  >>> three_vs_seven = binary_subset(data.train)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import pathlib
import socket
import threading
import zlib

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "DataError",
    "IDX_FILES",
    "KNOWN_DATASETS",
    "MNIST",
    "Split",
    "binary_subset",
    "load_idx_dir",
    "load_mnist",
    "load_tfds",
    "read_idx_images",
    "read_idx_labels",
    "split_mnist",
]

DATA_DIR_ENV = "ADVJAX_DATA_DIR"
KNOWN_DATASETS = ("mnist", "fashion_mnist")
# Keys are the roles; values are the file names without the optional ".gz".
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.
_SIDE = 28
_NUM_CLASSES = 10
# The paper keeps 50,000 of MNIST's 60,000 training images for training.
_TRAIN_FRACTION = (5, 6)
_GCS_HOST = "storage.googleapis.com"
_HOW_TO_POINT = (
    f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR to a folder holding the four "
    "MNIST IDX files"
)


class DataError(ValueError):
  """A dataset file or folder is missing, unreadable or malformed, or no source works.

  The message is one line and names the file or folder at fault.
  """


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """Images and labels of one split.

  Attributes:
    x: float32 images, shape (N, 784), values in [0, 1].
    y: labels, shape (N,): int32 classes, or float32 +-1 after `binary_subset`.

  Example:
    >>> s = Split(np.zeros((2, 784), np.float32), np.array([3, 7], np.int32))
    >>> len(s)
    2
  """

  x: np.ndarray
  y: np.ndarray

  def __post_init__(self) -> None:
    if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
      raise ValueError(
          f"Split needs x of shape (N, D) and y of shape (N,), got x {self.x.shape} "
          f"and y {self.y.shape}."
      )

  def __len__(self) -> int:
    return len(self.y)


@dataclasses.dataclass(frozen=True, eq=False)
class MNIST:
  """The four splits. ``train`` and ``valid`` are read-only views into ``train_full``.

  Attributes:
    train: training images 0..n_train-1 (0..49,999 for full MNIST).
    valid: the remaining training images (50,000..59,999 for full MNIST).
    test: the t10k images.
    train_full: all training images, ``train`` followed by ``valid``.
  """

  train: Split
  valid: Split
  test: Split
  train_full: Split


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------


def _read_bytes(path: pathlib.Path) -> bytes:
  """Returns the file's bytes, gunzipped when its name ends in ``.gz``."""
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  except OSError as exc:
    raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
  if path.suffix != ".gz":
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as exc:
    # EOFError: the gzip stream is truncated; OSError: bad header or CRC.
    raise DataError(f"{path}: corrupt gzip data ({exc})") from exc


def _parse_idx(data: bytes, path: pathlib.Path, magic: int) -> np.ndarray:
  """Parses an IDX file of unsigned bytes whose magic number must be ``magic``.

  Args:
    data: the (decompressed) file content.
    path: the file, named in errors.
    magic: 2051 for images, 2049 for labels; fixes the number of dimensions.

  Returns:
    A read-only uint8 array that views ``data``, shaped as the header says.
  """
  ndim = magic & 0xFF
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise DataError(
        f"{path}: truncated: {len(data)} bytes, shorter than the {header_len}-byte IDX "
        "header"
    )
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    hint = "; it looks gzip-compressed, so name it *.gz" if data[:2] == b"\x1f\x8b" else ""
    raise DataError(f"{path}: bad magic number {found}, expected {magic}{hint}")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
  expected = header_len + int(np.prod(shape, dtype=np.int64))
  if len(data) < expected:
    raise DataError(
        f"{path}: truncated: the header promises shape {shape} ({expected} bytes) but "
        f"the data has {len(data)} bytes"
    )
  if len(data) > expected:
    raise DataError(
        f"{path}: {len(data) - expected} bytes beyond the {expected} that the header's "
        f"shape {shape} accounts for"
    )
  return np.frombuffer(data, np.uint8, offset=header_len).reshape(shape)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX image file (magic 2051) of 28x28 images, gzipped or not.

  Args:
    path: the file; a name ending in ``.gz`` is gunzipped first.

  Returns:
    A read-only uint8 array of shape (N, 28, 28).

  Raises:
    DataError: the file is missing, unreadable, not valid gzip, has the wrong
      magic number, a size that disagrees with its header, or images that
      are not 28x28.

  Example:
    >>> images = read_idx_images("mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    (10000, 28, 28)
  """
  path = pathlib.Path(path)
  images = _parse_idx(_read_bytes(path), path, _IMAGES_MAGIC)
  if images.shape[1:] != (_SIDE, _SIDE):
    raise DataError(
        f"{path}: images are {images.shape[1]}x{images.shape[2]}, expected "
        f"{_SIDE}x{_SIDE}"
    )
  return images


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX label file (magic 2049) of labels in 0..9, gzipped or not.

  Args:
    path: the file; a name ending in ``.gz`` is gunzipped first.

  Returns:
    A read-only uint8 array of shape (N,).

  Raises:
    DataError: the file is missing, unreadable, not valid gzip, has the wrong
      magic number, a size that disagrees with its header, or a label above 9.

  Example:
    >>> read_idx_labels("mnist/t10k-labels-idx1-ubyte.gz")[:3]  # doctest: +SKIP
    array([7, 2, 1], dtype=uint8)
  """
  path = pathlib.Path(path)
  labels = _parse_idx(_read_bytes(path), path, _LABELS_MAGIC)
  bad = np.flatnonzero(labels >= _NUM_CLASSES)
  if bad.size:
    raise DataError(
        f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..9 "
        f"({bad.size} such labels)"
    )
  return labels


def _find_idx_file(folder: pathlib.Path, base: str) -> pathlib.Path:
  """Returns ``folder/base``, else ``folder/base.gz``; the plain file wins as it skips gunzip."""
  for candidate in (folder / base, folder / f"{base}.gz"):
    if candidate.is_file():
      return candidate
  raise DataError(
      f"{folder / base}[.gz]: file not found; the folder must hold "
      f"{', '.join(IDX_FILES.values())} (each optionally .gz)"
  )


def _read_pair(
    images_path: pathlib.Path, labels_path: pathlib.Path
) -> tuple[np.ndarray, np.ndarray]:
  """Reads matching image and label files, checking that their counts agree."""
  images = read_idx_images(images_path)
  labels = read_idx_labels(labels_path)
  if len(images) != len(labels):
    raise DataError(
        f"{images_path} holds {len(images)} images but {labels_path} holds "
        f"{len(labels)} labels"
    )
  return images, labels


def load_idx_dir(data_dir: str | os.PathLike, *, source: str = "") -> MNIST:
  """Loads MNIST-format data from a folder holding the four IDX files.

  Args:
    data_dir: the folder; each file may be plain or ``.gz`` (plain wins if both).
      An empty or blank string is refused rather than read as the current
      folder (``"."`` names that).
    source: where ``data_dir`` came from (e.g. ``"from ADVJAX_DATA_DIR"``), for
      error messages.

  Returns:
    The splits, built by `split_mnist` with its default training size.

  Raises:
    DataError: the folder is empty text, or the folder or a file is missing
      or malformed.

  Example:
    >>> load_idx_dir("/work/shared/data/mnist").train_full.x.shape  # doctest: +SKIP
    (60000, 784)
  """
  origin = f" ({source})" if source else ""
  if isinstance(data_dir, str) and not data_dir.strip():
    raise DataError(
        f"the data folder is empty text {data_dir!r}{origin}: {_HOW_TO_POINT} "
        "('.' is the current folder), or give neither to download MNIST"
    )
  folder = pathlib.Path(data_dir).expanduser()
  if not folder.is_dir():
    what = "is not a folder" if folder.exists() else "does not exist"
    raise DataError(f"data folder {folder}{origin} {what}: {_HOW_TO_POINT}")
  paths = {role: _find_idx_file(folder, base) for role, base in IDX_FILES.items()}
  train_x, train_y = _read_pair(paths["train_images"], paths["train_labels"])
  test_x, test_y = _read_pair(paths["test_images"], paths["test_labels"])
  return split_mnist(train_x, train_y, test_x, test_y)


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


def _to_flat_float(images: np.ndarray, what: str) -> np.ndarray:
  """Turns uint8 images of any shape (N, ...) with 784 pixels into float32 (N, 784) in [0, 1]."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"{what} must be uint8 pixel values, got dtype {images.dtype}.")
  if images.ndim < 2 or int(np.prod(images.shape[1:])) != _SIDE * _SIDE:
    raise ValueError(f"{what} must hold 28x28 images, got shape {images.shape}.")
  flat = images.reshape(len(images), _SIDE * _SIDE).astype(np.float32)
  # Divide rather than multiply by 1/255 so that each value is the correctly
  # rounded k/255 and ``x * 255`` rounds back to the original byte.
  flat /= np.float32(255)
  return flat


def _to_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
  """Checks integer labels in 0..9, one per image, and returns them as int32."""
  labels = np.asarray(labels)
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f"{what} must be {n} integer labels, got shape {labels.shape} dtype {labels.dtype}."
    )
  if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
    raise ValueError(f"{what} must lie in 0..9, got {labels.min()}..{labels.max()}.")
  return labels.astype(np.int32)


def _read_only(split: Split) -> Split:
  """Freezes the arrays, since train/valid share memory with train_full."""
  split.x.flags.writeable = False
  split.y.flags.writeable = False
  return split


def split_mnist(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_train: int | None = None,
) -> MNIST:
  """Scales, flattens and splits raw MNIST-style arrays into train/valid/test/train_full.

  Args:
    train_x: uint8 training images, shape (N, 28, 28), (N, 28, 28, 1) or (N, 784).
    train_y: integer training labels in 0..9, shape (N,).
    test_x: uint8 test images, same layouts as ``train_x``.
    test_y: integer test labels in 0..9.
    n_train: how many leading training images form ``train``; the rest form
      ``valid``. None means 5/6 of them: exactly 50,000 of MNIST's 60,000, and
      proportionally fewer for smaller sets (such as tfds mock data).

  Returns:
    float32 (., 784) images in [0, 1] and int32 labels; ``train`` and ``valid``
    are read-only views into ``train_full``.

  Raises:
    ValueError: bad dtypes or shapes, labels outside 0..9, or an ``n_train``
      that leaves ``train`` or ``valid`` empty.

  Example:
    >>> x = np.zeros((12, 28, 28), np.uint8); y = np.arange(12) % 10
    >>> data = split_mnist(x, y, x[:4], y[:4])
    >>> len(data.train), len(data.valid), len(data.test), len(data.train_full)
    (10, 2, 4, 12)
  """
  full_x = _to_flat_float(train_x, "train_x")
  full_y = _to_labels(train_y, len(full_x), "train_y")
  tx = _to_flat_float(test_x, "test_x")
  ty = _to_labels(test_y, len(tx), "test_y")
  n = len(full_x)
  if n_train is None:
    n_train = n * _TRAIN_FRACTION[0] // _TRAIN_FRACTION[1]
  if not 0 < n_train < n:
    raise ValueError(
        f"n_train must leave both train and valid non-empty: need 0 < n_train < {n}, "
        f"got {n_train}."
    )
  full = _read_only(Split(full_x, full_y))
  return MNIST(
      train=Split(full.x[:n_train], full.y[:n_train]),
      valid=Split(full.x[n_train:], full.y[n_train:]),
      test=_read_only(Split(tx, ty)),
      train_full=full,
  )


def binary_subset(split: Split, positive: int = 3, negative: int = 7) -> Split:
  """Keeps the examples of two classes, labelled +1 (positive) and -1 (negative).

  Args:
    split: a split with integer class labels.
    positive: the class labelled +1.
    negative: the class labelled -1.

  Returns:
    A new split, in the original order, with float32 labels in {+1, -1} as the
    logistic-regression loss expects.

  Raises:
    ValueError: ``positive == negative``.

  Example:
    >>> s = Split(np.eye(3, 784, dtype=np.float32), np.array([3, 5, 7], np.int32))
    >>> binary_subset(s).y
    array([ 1., -1.], dtype=float32)
  """
  if positive == negative:
    raise ValueError(f"positive and negative must differ, both are {positive}.")
  keep = (split.y == positive) | (split.y == negative)
  y = np.where(split.y[keep] == positive, 1.0, -1.0).astype(np.float32)
  return Split(split.x[keep], y)


# ---------------------------------------------------------------------------
# tensorflow-datasets
# ---------------------------------------------------------------------------


def _network_available(host: str = _GCS_HOST, port: int = 443, timeout: float = 3.0) -> bool:
  """Returns whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

  The probe runs in a daemon thread because a hanging DNS lookup ignores the
  socket timeout; waiting on the thread bounds the whole probe.
  """
  reached: list[bool] = []

  def probe() -> None:
    try:
      with socket.create_connection((host, port), timeout=timeout):
        reached.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(reached)


def _tfds_prepared(tfds, name: str) -> bool:
  """Returns whether tfds can open ``name`` without downloading.

  ``builder.is_prepared()`` is False under ``tfds.testing.mock_data`` even though
  reading works there, so this asks the question that matters: does opening
  the data source with ``download=False`` succeed?
  """
  try:
    tfds.data_source(name, split="test", download=False)
  except Exception:  # noqa: BLE001 - any failure means "not ready to read".
    return False
  return True


def _tensorflow_available() -> bool:
  """Returns whether TensorFlow is installed, without paying for its import."""
  return importlib.util.find_spec("tensorflow") is not None


def _one_line(exc: BaseException) -> str:
  return " ".join(f"{type(exc).__name__}: {exc}".split())


def _read_tfds_split(source, what: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole tfds data source into uint8 images (N, 28, 28, 1) and labels (N,)."""
  n = len(source)
  images = np.empty((n, _SIDE, _SIDE, 1), np.uint8)
  labels = np.empty((n,), np.int64)
  # One record at a time: `__getitems__` would batch the reads, but
  # tfds.testing.mock_data breaks it (it calls the mock without `self`).
  for i in range(n):
    example = source[i]
    try:
      images[i] = example["image"]
    except ValueError as exc:
      raise DataError(
          f"tensorflow-datasets {what}: example {i} is not a 28x28x1 image ({exc})"
      ) from exc
    labels[i] = example["label"]
  return images, labels


def load_tfds(name: str = "mnist") -> MNIST:
  """Loads MNIST or Fashion-MNIST through tensorflow-datasets' random-access data source.

  When the dataset is not prepared yet, this checks first that a download can
  work and fails fast otherwise: a ~3 s probe of storage.googleapis.com:443,
  then whether TensorFlow (which tfds needs to prepare the data) is installed.

  Args:
    name: ``"mnist"`` or ``"fashion_mnist"``.

  Returns:
    The splits, built by `split_mnist` from tfds's train (60,000) and test
    (10,000) splits; smaller sets (mock data) are split 5/6 : 1/6.

  Raises:
    ValueError: unknown ``name``.
    DataError: tensorflow-datasets is missing, or the data is not prepared and
      cannot be downloaded (offline, or no TensorFlow), or tfds fails to read it.

  Example:
    >>> data = load_tfds("fashion_mnist")  # doctest: +SKIP
  """
  _check_name(name)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as exc:
    raise DataError(
        f"no data folder given and tensorflow-datasets is not installed: "
        f"pip install 'advjax[tfds]', or {_HOW_TO_POINT}"
    ) from exc
  prepared = _tfds_prepared(tfds, name)
  if not prepared:
    if not _network_available():
      raise DataError(
          f"{name} is not in the tensorflow-datasets cache and {_GCS_HOST}:443 is "
          f"unreachable, so it cannot be downloaded: {_HOW_TO_POINT}"
      )
    if not _tensorflow_available():
      raise DataError(
          f"{name} is not in the tensorflow-datasets cache and preparing it needs "
          f"TensorFlow, which is not installed: pip install 'advjax[tfds]', or "
          f"{_HOW_TO_POINT}"
      )
  try:
    train = tfds.data_source(name, split="train", download=not prepared)
    test = tfds.data_source(name, split="test", download=False)
    train_x, train_y = _read_tfds_split(train, f"{name}/train")
    test_x, test_y = _read_tfds_split(test, f"{name}/test")
  except DataError:
    raise
  except Exception as exc:  # noqa: BLE001 - tfds raises many types; say which source failed.
    raise DataError(
        f"tensorflow-datasets could not load {name} ({_one_line(exc)}): {_HOW_TO_POINT}"
    ) from exc
  return split_mnist(train_x, train_y, test_x, test_y)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def _check_name(name: str) -> None:
  if name not in KNOWN_DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}.")


def load_mnist(data_dir: str | os.PathLike | None = None, *, name: str = "mnist") -> MNIST:
  """Loads MNIST (or Fashion-MNIST) from a folder of IDX files or tensorflow-datasets.

  The source is, in order: ``data_dir``; else the folder in the environment
  variable ``ADVJAX_DATA_DIR`` when it is set; else tensorflow-datasets
  (`load_tfds`). An empty or blank ``data_dir`` or ``ADVJAX_DATA_DIR`` is an
  error, not the current folder (``"."`` names that).

  Args:
    data_dir: a folder holding the four IDX files (plain or ``.gz``), or None.
    name: ``"mnist"`` or ``"fashion_mnist"``; with a folder the file names are
      the same for both, so ``name`` then only has to be known.

  Returns:
    train (50,000), valid (10,000), test (10,000) and train_full (60,000):
    float32 images (N, 784) in [0, 1], int32 labels (N,).

  Raises:
    ValueError: unknown ``name``.
    DataError: an empty folder name, the folder or a file missing or
      malformed, or tfds unable to provide the data; the one-line message
      says what to do.

  Example:
    >>> data = load_mnist("/work/shared/data/mnist")  # doctest: +SKIP
    >>> data.train.x.shape, data.train.y.dtype  # doctest: +SKIP
    ((50000, 784), dtype('int32'))
  """
  _check_name(name)
  if data_dir is not None:
    return load_idx_dir(data_dir)
  env_dir = os.environ.get(DATA_DIR_ENV)
  if env_dir is not None:
    return load_idx_dir(env_dir, source=f"from {DATA_DIR_ENV}")
  return load_tfds(name)
