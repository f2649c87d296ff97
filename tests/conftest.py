"""What several test modules share: tiny problems, training settings, crash injection, MNIST files.

Plain helpers, imported by name (``from tests.conftest import MODEL``), since
most are module-level constants that tests parametrize over or build on at
import. The repository root's conftest.py sets JAX up before this runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import advjax
from advjax import loop
from advjax import models
from advjax import train

# ---------------------------------------------------------------------------
# A tiny classifier and its data, for the trainer and the loop.
# ---------------------------------------------------------------------------

MODEL = models.maxout_mlp(units=8, pieces=2, classes=3)


@dataclasses.dataclass(frozen=True)
class Split:
  x: np.ndarray
  y: np.ndarray


def synthetic(n: int, seed: int = 0) -> Split:
  """Three classes in 12 dimensions, given by a random linear teacher."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 12)).astype(np.float32)
  teacher = np.random.default_rng(99).normal(size=(12, 3))
  return Split(x, np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32))


TRAIN, VALID = synthetic(100), synthetic(50, seed=1)
INIT = jax.jit(MODEL.init)
# Five steps an epoch on TRAIN, validation in one batch.
CONFIG = loop.TrainConfig(epochs=3, eval_eps=0.25, batch_size=20, eval_batch_size=64)


def assert_trees_equal(a, b):
  """Bit-for-bit equal leaves."""
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


def without_time(history):
  """A history without its (never reproducible) ``seconds``."""
  return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


class Crash(Exception):
  pass


def crash_on_epoch(monkeypatch, epoch):
  """Makes the ``epoch``-th epoch trained from now die halfway, as if killed.

  Returns:
    A list that gains one entry per epoch trained.
  """
  real = train.train_epoch
  calls = []

  def flaky(*args, **kwargs):
    calls.append(1)
    if len(calls) == epoch:
      raise Crash
    return real(*args, **kwargs)

  monkeypatch.setattr(train, "train_epoch", flaky)
  return calls


# ---------------------------------------------------------------------------
# Losses of small hand-written models, for the attacks and objectives.
# ---------------------------------------------------------------------------


def logistic(params, x, y):
  return advjax.logistic_loss(params["w"], params["b"], x, y)


def mlp_loss(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = hidden @ params["w2"]
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def logistic_problem(seed=0, n=16, d=10):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.normal(size=d), jnp.float32), "b": jnp.asarray(0.3, jnp.float32)}
  x = jnp.asarray(rng.uniform(size=(n, d)), jnp.float32)
  y = jnp.asarray(rng.choice([-1.0, 1.0], size=n), jnp.float32)
  return params, x, y


def mlp_problem(seed=0, n=8, d=6, hidden=5, classes=3, output_bias=False):
  """A two-layer tanh network's parameters (``b2`` with ``output_bias``), inputs and labels."""
  rng = np.random.default_rng(seed)
  params = {
      "w1": rng.normal(size=(d, hidden)),
      "b1": rng.normal(size=hidden),
      "w2": rng.normal(size=(hidden, classes)),
  }
  if output_bias:
    params["b2"] = rng.normal(size=classes)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  x = jnp.asarray(rng.uniform(size=(n, d)), jnp.float32)
  y = jnp.asarray(rng.integers(0, classes, size=n), jnp.int32)
  return params, x, y


# A two-layer network with biases, split at its first layer for the sweeps.


def first_layer(params, x):
  return x @ params["w1"] + params["b1"]


def upper_layers(params, hidden):
  return jnp.tanh(hidden) @ params["w2"] + params["b2"]


def apply_fn(params, x):
  return upper_layers(params, first_layer(params, x))


def probs_fn(params, x):
  return jax.nn.softmax(apply_fn(params, x))


def loss_fn(params, x, y):
  log_probs = jax.nn.log_softmax(apply_fn(params, x))
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], 1))


def problem(seed=0, n=10, d=6, hidden=5, classes=3):
  """`mlp_problem` with an output bias, for `apply_fn`."""
  return mlp_problem(seed, n, d, hidden, classes, output_bias=True)


# ---------------------------------------------------------------------------
# MNIST's IDX files, written byte by byte independently of the parser.
# ---------------------------------------------------------------------------

IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
  """The IDX encoding of a uint8 array: big-endian magic, dimensions, then the bytes."""
  array = np.asarray(array, np.uint8)
  if magic is None:
    magic = 0x0800 | array.ndim
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.tobytes()


def write_file(path: pathlib.Path, content: bytes, gz: bool) -> pathlib.Path:
  """Writes ``content`` to ``path`` (plus ``.gz``, compressed, when ``gz``)."""
  if gz:
    path = path.with_name(path.name + ".gz")
    content = gzip.compress(content)
  path.write_bytes(content)
  return path


def write_mnist_dir(
    folder: pathlib.Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
  """Writes four random IDX files into ``folder`` (created) and returns the arrays written."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  arrays = {
      IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
      TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
  }
  # Pin the extremes so that scaling to exactly 0.0 and 1.0 is exercised.
  arrays[IMAGES][:1, 0, 0], arrays[IMAGES][:1, 0, 1] = 0, 255
  for name, array in arrays.items():
    write_file(folder / name, idx_bytes(array), gz)
  return arrays


def write_idx(folder: pathlib.Path, n_train: int = 120, n_test: int = 30) -> None:
  """The experiments' MNIST folder: `write_mnist_dir` of 120 training and 30 test images."""
  write_mnist_dir(folder, n_train, n_test)


def assert_one_line_naming(err: pytest.ExceptionInfo, *needles: str) -> None:
  """The error's message is one line and names every needle."""
  message = str(err.value)
  assert "\n" not in message
  for needle in needles:
    assert needle in message, f"{needle!r} not in {message!r}"
