"""Test-wide JAX settings, and the shared namespace of advjax's docstring examples.

pytest loads this file before any other conftest and before collecting a
module, so these settings hold for the tests and the doctests alike:

Four CPU devices, so that the sharding tests (and `advjax.sharding`'s
examples) can build meshes of 1, 2 and 4 devices on a one-CPU machine
(`--xla_force_host_platform_device_count`). Every other test runs on the first
device as usual. Set before any JAX backend starts.

Full float32 matrix products: the tests compare implementations to float32
tolerances, which TF32 (a GPU's default) and bfloat16 passes (a TPU's) miss.
On a CPU this changes nothing.

XLA's backend optimisation level 0 (``--xla_backend_optimization_level=0``,
added to ``XLA_FLAGS`` unless it names a level already): the tests run small
programs on tiny data, so most of their time is compilation, and LLVM's
optimisation passes cost more than they save. Measured on 2 cores, the suite's
CPU time: 724 s at level 0, 808 s at level 1 (back to back), 929 s at the
default level (an earlier run the same day). The level changes code
generation, not the HLO. One file got slower, test_robust_training.py (40 s to
111 s): unoptimised, the small CNN's convolutions inside a while loop (PGD)
run about 35 times slower than at the default level; its tiny preset attacks
10 test images and watches 16 training images for that reason (91 s to 47 s).

A compilation cache shared by the test processes (JAX's persistent cache, in
a temporary folder removed when the run ends, every program cached): the two
xdist workers and the tests within each compile many identical programs (the
same tiny model's step, built again by another test). Measured on 2 cores, the
suite's CPU time fell from 731 s to 685 s with a cold cache (a CI run's case);
with a warm one it is 475 s, the rest being the programs' running and tracing.
A user's own ``JAX_COMPILATION_CACHE_DIR`` is left alone.

The docstring examples of `advjax/` run as doctests (``--doctest-modules`` in
pyproject.toml). Besides their module's own globals they see the names of
`_doctest_objects`: the modules they use (``advjax``, ``jax``, ``jnp``,
``np``, ``optax``, ``models``, ``train``, ``loop``, ``evaluation``) and a tiny
maxout model with everything an example takes (``model``, ``params``,
``loss_fn``, ``x``, ``y``, ``key``, ``stacked``, ``state``, ``data``,
``config``), built once per session. Each example runs in a fresh temporary
working directory, so those that write ``runs/...`` leave nothing behind.
"""

import atexit
import os
import shutil
import tempfile

from _pytest.doctest import DoctestItem
import jax
import pytest

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  ).strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  if "ADVJAX_TEST_CACHE" not in os.environ:  # the first process: pytest's, before its workers
    os.environ["ADVJAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="advjax-tests-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["ADVJAX_TEST_CACHE"], ignore_errors=True)
  jax.config.update("jax_compilation_cache_dir", os.environ["ADVJAX_TEST_CACHE"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def _doctest_objects():
  """The names every docstring example may use, built on first need."""
  import jax.numpy as jnp
  import numpy as np
  import optax

  import advjax
  from advjax import data as data_lib
  from advjax import evaluation
  from advjax import loop
  from advjax import models
  from advjax import train

  model = models.maxout_mlp(units=8, pieces=2)
  key = jax.random.key(0)
  x = jax.random.uniform(jax.random.key(1), (8, 784))
  y = jnp.arange(8) % 10
  init = jax.jit(model.init)  # one compilation for params and stacked
  params = init(key, x[:1])
  # MNIST's layout at a hundredth of its size: 200 training, 100 validation
  # and 100 test images of random pixels.
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 400)
  data = data_lib.split_mnist(images[:300], labels[:300], images[300:], labels[300:], n_train=200)
  return {
      "advjax": advjax,
      "jax": jax,
      "jnp": jnp,
      "np": np,
      "optax": optax,
      "models": models,
      "train": train,
      "loop": loop,
      "evaluation": evaluation,
      "model": model,
      "params": params,
      "loss_fn": model.loss_fn(),
      "x": x,
      "y": y,
      "key": key,
      # An ensemble of three members, each initialised from its own key.
      "stacked": advjax.stack([init(k, x[:1]) for k in jax.random.split(key, 3)]),
      "state": train.create_train_state(model, key, x[:1], train.recipe_sgd(2)),
      "data": data,
      "config": loop.TrainConfig(epochs=1, eval_eps=0.25),
  }


@pytest.fixture(autouse=True)
def _doctest_setup(request):
  """For a docstring example only: the shared names, and a fresh working directory."""
  if not isinstance(request.node, DoctestItem):
    return
  namespace = request.getfixturevalue("doctest_namespace")
  namespace.update(request.getfixturevalue("_doctest_objects"))
  request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
