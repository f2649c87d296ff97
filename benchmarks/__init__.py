"""Benchmarks: advjax against its peers, and against the cost floor of the paper's method.

Run ``python -m benchmarks`` (``--quick`` for a smoke run of a few seconds). It
measures, in one process on one device:

1. the adversarial train step of eq. (6) against the clean step;
2. that step against the same model and objective in PyTorch eager;
3. FGSM over the MNIST test set against cleverhans (JAX), foolbox and
   torchattacks (PyTorch) and plain PyTorch, with a check that all of them
   produce the same adversarial examples from the same weights;
4. a 32-epsilon sweep against the idiomatic loop of jitted calls;
5. one vmapped training step of a 12-member ensemble against 12 sequential steps;
6. the peak memory of each of the above (a column of every table), and the
   work each row does per second (GFLOP/s) beside the machine's own measured
   float32 matmul peak;
7. the adversarial step data-parallel over 1, 2 and 4 devices (`advjax.sharding`);
8. one epoch of adversarial training (50,000 images, batch 100) as one
   compiled program (`advjax.train.train_epoch`) against the per-step loop of
   jitted steps fed from the host, with a check that both end with the same
   parameters;
9. one compiled epoch of 5 seeds vmapped against 5 sequential one-seed epochs;
10. the same for the training-time eps study: 7 members, eps 0 to 0.3;
11. one compiled epoch of the 1600-unit maxout, a GPU target (not run on a CPU);
12. AutoAttack standard on 1,000 test images against torchattacks' on the same
    weights;
13. AutoAttack's robustness curve over 4 eps as one program against 4 calls.

On a CPU, items 3 and 8 also time advjax's programs compiled with the README's
opt-in CPU recipe (`benchmarks.harness.CPU_RECIPE`), beside its default.

``--repeat N`` runs every item N times and reports medians and ranges;
``--only KEY ...`` reruns some items into the last run's results.

Each item is a module of ``benchmarks/items/`` that declares its keys in
``results.json`` and the function that measures it (`benchmarks.items`);
``benchmarks/base.py`` holds what they share: the sizes, the fixture, the
result model and the PyTorch adapters.

Results go to ``results.json`` and ``RESULTS.md`` beside this file, one entry
per device kind (cpu, gpu), so that runs on different machines sit side by side.
The peers are optional (``benchmarks/requirements.txt``); a peer that is not
installed is a row that says so.
"""

import os

# Set before JAX and PyTorch load, which is why they live here and not in main.
# JAX and PyTorch share a GPU: JAX must not claim most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# PyTorch's OpenMP threads spin-wait between operators by default. On a 2-core
# machine also busy with XLA's thread pool or other processes, a spinning
# thread steals the core its partner needs, and the PyTorch train step was
# measured 25-50x slower (670 ms instead of 15-25 ms). Sleeping waiters measure
# PyTorch at its best instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Four host devices, so that the data-parallel item can build meshes of 1, 2
# and 4 devices on a CPU; every other item runs on the first device.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  ).strip()

from benchmarks.base import FULL  # noqa: E402
from benchmarks.base import QUICK  # noqa: E402
from benchmarks.base import Config  # noqa: E402
from benchmarks.suite import run  # noqa: E402

__all__ = ["Config", "FULL", "QUICK", "run"]
