"""MNIST (and Fashion-MNIST) as flat float32 NumPy arrays, split as in the paper.

Three sources, one entry point (`load_mnist`), tried in this order:

* a folder holding the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), parsed here with NumPy;
* the folder named by ``ADVJAX_DATA_DIR``;
* a download (`download_mnist`): TensorFlow Datasets' download manager fetches
  the four ``.gz`` files once into the TFDS download cache, advjax checks their
  SHA-256 and reads them with the same IDX parser. No TensorFlow is involved.

`load_tfds` reads TFDS's prepared dataset instead (``tfds.data_source``); call
it when you want that, with TensorFlow installed to prepare the data once
(``pip install 'advjax[tfds]'``). tensorflow-datasets is imported only on the
download and TFDS paths, so this module costs nothing beyond NumPy at import
time.

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
import hashlib
import importlib.util
import json
import os
import pathlib
import socket
import threading
import urllib.parse
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
    "download_mnist",
    "load_idx_dir",
    "load_mnist",
    "load_tfds",
    "read_idx_images",
    "read_idx_labels",
    "split_mnist",
]

DATA_DIR_ENV = "ADVJAX_DATA_DIR"
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
_HOW_TO_POINT = (
    f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR to a folder holding the four " "MNIST IDX files"
)


@dataclasses.dataclass(frozen=True)
class _Remote:
  """Where a dataset's four ``.gz`` IDX files are published, and their known SHA-256.

  A download passes if its own SHA-256 is the published one, or if its
  decompressed content's is the known one (a mirror may recompress a file, as
  ../shared/data/mnist did for MNIST's train-images).

  Attributes:
    url: the folder the tensorflow-datasets builder downloads from.
    gz_sha256: IDX base name -> SHA-256 of the ``.gz`` file as published, as
      tensorflow-datasets records it (``tensorflow_datasets/url_checksums``).
    idx_sha256: IDX base name -> SHA-256 of the decompressed file, where known.
  """

  url: str
  gz_sha256: dict[str, str]
  idx_sha256: dict[str, str] = dataclasses.field(default_factory=dict)


# The four .gz files as published; see `_Remote`.
_MNIST_GZ_SHA256 = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# ../shared/data/mnist/SHA256SUMS.decompressed.
_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION_MNIST_GZ_SHA256 = {
    "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
_REMOTES = {
    "mnist": _Remote(
        url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        gz_sha256=_MNIST_GZ_SHA256,
        idx_sha256=_MNIST_IDX_SHA256,
    ),
    "fashion_mnist": _Remote(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        gz_sha256=_FASHION_MNIST_GZ_SHA256,
    ),
}
KNOWN_DATASETS = tuple(_REMOTES)


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
        f"{path}: truncated: {len(data)} bytes, shorter than the {header_len}-byte IDX " "header"
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
        f"{path}: images are {images.shape[1]}x{images.shape[2]}, expected " f"{_SIDE}x{_SIDE}"
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
        f"{images_path} holds {len(images)} images but {labels_path} holds " f"{len(labels)} labels"
    )
  return images, labels


def _load_files(paths: dict[str, pathlib.Path]) -> MNIST:
  """Reads the four files named by role (the keys of `IDX_FILES`) and splits them."""
  train_x, train_y = _read_pair(paths["train_images"], paths["train_labels"])
  test_x, test_y = _read_pair(paths["test_images"], paths["test_labels"])
  if len(train_x) < 2:
    raise DataError(
        f"{paths['train_images']} holds {len(train_x)} images: training needs at least 2 "
        "(one for train, one for valid)"
    )
  if not len(test_x):
    raise DataError(f"{paths['test_images']} holds no images")
  if len(train_x) < len(test_x):
    raise DataError(
        f"{paths['train_images']} holds {len(train_x)} images, fewer than the "
        f"{len(test_x)} of {paths['test_images']}: are the training and test files swapped?"
    )
  return split_mnist(train_x, train_y, test_x, test_y)


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
  return _load_files({role: _find_idx_file(folder, base) for role, base in IDX_FILES.items()})


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
# Download (TFDS's download manager, no TensorFlow) and tensorflow-datasets
# ---------------------------------------------------------------------------


def _network_available(host: str, port: int, timeout: float = 3.0) -> bool:
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


def _host_port(url: str) -> tuple[str, int]:
  """The host and port a download from ``url`` connects to."""
  parts = urllib.parse.urlsplit(url)
  if not parts.hostname:  # `_base_url` lets none through
    raise DataError(f"{url!r} names no host to download from")
  return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _offline_error(name: str, where: str, url: str) -> DataError:
  host, port = _host_port(url)
  return DataError(
      f"{name} is not in the {where} and {host}:{port} is unreachable, so it cannot "
      f"be downloaded: {_HOW_TO_POINT}"
  )


def _url_env(name: str) -> str:
  """The environment variable that overrides ``name``'s download URL: ADVJAX_MNIST_URL..."""
  return f"ADVJAX_{name.upper()}_URL"


def _base_url(name: str, base_url: str | None) -> str:
  """The folder URL to download ``name`` from, ending in a slash.

  ``base_url``, else the environment variable `_url_env` (name), else the URL
  tensorflow-datasets' own builder uses.
  """
  what = "base_url"
  if base_url is None:
    base_url = os.environ.get(_url_env(name))
    what = _url_env(name)
    if base_url is None:
      return _REMOTES[name].url
  if not base_url.strip():
    raise DataError(
        f"{what} is empty text {base_url!r}: give the URL of a folder holding {name}'s "
        f"four .gz IDX files, or leave it unset to use {_REMOTES[name].url}"
    )
  parts = urllib.parse.urlsplit(base_url.strip())
  if parts.scheme not in ("http", "https") or not parts.hostname:
    raise DataError(
        f"{what} {base_url!r} is not an http:// or https:// URL of a folder holding "
        f"{name}'s four .gz IDX files"
    )
  return base_url.strip().rstrip("/") + "/"


def _import_tfds():
  """Imports tensorflow-datasets, or raises a one-line DataError saying what to do."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as exc:
    raise DataError(
        "no data folder given and tensorflow-datasets is not installed: pip install "
        f"tensorflow-datasets, or {_HOW_TO_POINT}"
    ) from exc
  return tfds


def _cached_download(folder: pathlib.Path, url: str) -> pathlib.Path | None:
  """The file that TFDS's download manager cached for ``url`` in ``folder``, or None.

  The manager writes beside each download ``<file>.INFO``, JSON that lists the
  URLs it came from; reading those finds a download without the network.
  """
  for info in sorted(folder.glob("*.INFO")):
    try:
      urls = json.loads(info.read_text()).get("urls", ())
    except (OSError, ValueError, AttributeError):
      continue
    path = info.with_suffix("")
    if url in urls and path.is_file():
      return path
  return None


def _check_download(path: pathlib.Path, url: str, name: str, base: str) -> None:
  """Refuses a download whose SHA-256 is not the known one, deleting it from the cache."""
  remote = _REMOTES[name]
  try:
    raw = path.read_bytes()
  except OSError as exc:
    raise DataError(f"{path} (downloaded from {url}): cannot read: {exc}") from exc
  got = hashlib.sha256(raw).hexdigest()
  if got == remote.gz_sha256[base]:
    return
  if base in remote.idx_sha256:
    try:
      if hashlib.sha256(gzip.decompress(raw)).hexdigest() == remote.idx_sha256[base]:
        return
    except (OSError, EOFError, zlib.error):
      pass  # Not valid gzip: refused below.
  # Deleted, with TFDS's .INFO beside it, so that the next run downloads afresh.
  path.unlink(missing_ok=True)
  path.with_name(path.name + ".INFO").unlink(missing_ok=True)
  raise DataError(
      f"{url}: the download has SHA-256 {got}, not {name}'s known "
      f"{remote.gz_sha256[base]}; deleted it from {path.parent}, so the next run "
      "downloads it again"
  )


def download_mnist(name: str = "mnist", *, base_url: str | None = None) -> MNIST:
  """Downloads MNIST or Fashion-MNIST's four IDX files once, checks and reads them.

  TensorFlow Datasets' download manager (``tfds.download.DownloadManager``)
  fetches the ``.gz`` files into TFDS's download cache
  (``$TFDS_DATA_DIR/downloads/<name>``, by default
  ``~/tensorflow_datasets/downloads/<name>``), where ``tfds.load`` caches them
  too; later calls read them from there without the network. Every file's
  SHA-256 is checked against the known one on every call, and the IDX parser
  of this module reads them: TensorFlow is not needed.

  When a file is not cached, a ~3 s probe of the download host comes first, so
  that being offline fails fast.

  Args:
    name: ``"mnist"`` or ``"fashion_mnist"``.
    base_url: the folder URL holding the four ``.gz`` files. None means the
      environment variable ``ADVJAX_MNIST_URL`` (``ADVJAX_FASHION_MNIST_URL``
      for Fashion-MNIST), else the URL tensorflow-datasets' builder uses
      (https://storage.googleapis.com/cvdf-datasets/mnist/ for MNIST).

  Returns:
    The splits, built by `split_mnist` with its default training size.

  Raises:
    ValueError: unknown ``name``.
    DataError: an empty or malformed URL, no tensorflow-datasets, the host
      unreachable, a failed download, or a file whose SHA-256 is not the known
      one (it is deleted, so that the next call downloads it again).

  Example:
    >>> data = download_mnist("fashion_mnist")  # doctest: +SKIP
    >>> len(data.train_full)  # doctest: +SKIP
    60000
  """
  _check_name(name)
  url = _base_url(name, base_url)
  tfds = _import_tfds()
  from tensorflow_datasets.core import constants  # pylint: disable=import-outside-toplevel

  # Where tfds.load keeps the downloads of `name`, so both share them.
  downloads = pathlib.Path(constants.DATA_DIR).expanduser() / "downloads"
  urls = {base: f"{url}{base}.gz" for base in IDX_FILES.values()}
  cached = {base: _cached_download(downloads / name, u) for base, u in urls.items()}
  paths = {base: path for base, path in cached.items() if path is not None}
  if len(paths) < len(urls):
    if not _network_available(*_host_port(url)):
      raise _offline_error(name, f"tensorflow-datasets download cache ({downloads / name})", url)
    try:
      manager = tfds.download.DownloadManager(download_dir=downloads, dataset_name=name)
      # dict(urls) is typed dict[str, Url] there, which picks the overload of
      # `download` that returns a dict (a dict[str, str] is no dict[str, Url]).
      downloaded = manager.download(dict(urls))
      paths = {base: pathlib.Path(path) for base, path in downloaded.items()}
    except Exception as exc:  # noqa: BLE001 - requests and tfds raise many types.
      raise DataError(
          f"could not download {name} from {url} ({_one_line(exc)}): {_HOW_TO_POINT}"
      ) from exc
  for base, path in paths.items():
    _check_download(path, urls[base], name, base)
  return _load_files({role: paths[base] for role, base in IDX_FILES.items()})


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
  """Loads MNIST or Fashion-MNIST as tensorflow-datasets prepares it (``tfds.data_source``).

  `load_mnist` does not come here: call this when you want TFDS's prepared
  dataset. Preparing it (once) needs TensorFlow: ``pip install 'advjax[tfds]'``.
  When the dataset is not prepared yet, this checks first that a download can
  work and fails fast otherwise: a ~3 s probe of the host the TFDS builder
  downloads from, then whether TensorFlow is installed.

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
  tfds = _import_tfds()
  prepared = _tfds_prepared(tfds, name)
  if not prepared:
    url = _REMOTES[name].url
    if not _network_available(*_host_port(url)):
      raise _offline_error(name, "tensorflow-datasets cache", url)
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
  """Loads MNIST (or Fashion-MNIST) from a folder of IDX files, or downloads it.

  The source is, in order: ``data_dir``; else the folder in the environment
  variable ``ADVJAX_DATA_DIR`` when it is set; else a download into the
  tensorflow-datasets cache (`download_mnist`), read from there afterwards.
  An empty or blank ``data_dir`` or ``ADVJAX_DATA_DIR`` is an error, not the
  current folder (``"."`` names that). For TFDS's prepared dataset, call
  `load_tfds` instead.

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
      malformed, or the download impossible (offline) or refused (checksum);
      the one-line message says what to do.

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
  return download_mnist(name)
