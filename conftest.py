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

XLA's fast compilation settings for tests (``--xla_backend_optimization_level=0
--xla_cpu_use_fusion_emitters=false``, added to ``XLA_FLAGS`` unless the user's
flags name a level already): the tests run small programs on tiny data, so most
of their time is compilation. Level 0 skips LLVM's optimisation passes, and
the older elemental emitters skip the MLIR pipeline of the fusion emitters. A
tiny model's compiled epochs (clean, adversarial, three members in turn and
vmapped) compile in 2.2 s against 3.7 s with the fusion emitters at level 0
and 6.8 s at XLA's default level (3). The suite's summed test time, measured on
2 cores: 629 s with the fusion emitters at level 0, 432 s with both settings.
(Earlier runs measured its CPU time at 724 s at level 0, 808 s at level 1 and
929 s at the default level.) Neither setting changes the HLO. Inside a while
loop (PGD, the training epoch) the small CNN's input-gradient convolutions are
left to XLA's own emitter, which unoptimised runs PGD-10 on 16 images in 2.1 s
against 26 ms at level 1. So
test_robust_training.py's tiny preset attacks 4 test images and watches 4
training images (the file took 41 s with 10 and 16, 28 s with 4 and 4).

One thing these settings change is rounding: at level 0 the elemental
emitters round a few operations differently from one program to another.
A test whose claim is bit-for-bit equality between two programs (a member
trained in turn equals its run alone) is marked ``xla_defaults``: under the
suite's settings it runs instead alone in a fresh process, with the user's own
``XLA_FLAGS`` (XLA's defaults unless the user set some), as a user's program
compiles: 17 s against 3 s in the suite's process.

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
import subprocess
import sys
import tempfile

from _pytest.doctest import DoctestItem
import jax
import pytest

# The user's own XLA flags, kept by the first process for the ``xla_defaults`` tests,
# which set ADVJAX_TEST_XLA_DEFAULTS in the process they start.
USER_XLA_FLAGS = os.environ.setdefault(
    "ADVJAX_TEST_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", "")
)
SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if not (
    "xla_backend_optimization_level" in USER_XLA_FLAGS or "ADVJAX_TEST_XLA_DEFAULTS" in os.environ
):
  os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} {SUITE_XLA_FLAGS}".strip()
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


def pytest_configure(config):
  config.addinivalue_line(
      "markers",
      "xla_defaults: the test claims bit-for-bit equality, so it runs with the user's XLA_FLAGS",
  )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
  """Runs an ``xla_defaults`` test alone in a fresh process, with the user's XLA flags.

  Only where this process compiles with the suite's flags; in that fresh process
  (or under the user's own level) the test runs here as usual.
  """
  if pyfuncitem.get_closest_marker("xla_defaults") is None:
    return None
  if os.environ.get("XLA_FLAGS", "") == USER_XLA_FLAGS:
    return None
  command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
  result = subprocess.run(
      [*command, pyfuncitem.nodeid],
      cwd=pyfuncitem.config.rootpath,
      env={**os.environ, "XLA_FLAGS": USER_XLA_FLAGS, "ADVJAX_TEST_XLA_DEFAULTS": "1"},
      capture_output=True,
      text=True,
      check=False,
  )
  if result.returncode != 0:
    pytest.fail(f"with the user's XLA flags, in a fresh process:\n{result.stdout}", pytrace=False)
  return True
