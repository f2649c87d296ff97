"""Measuring: wall-clock medians, peak memory, work done, and what machine the numbers come from.

Memory (item 6 of the benchmark issue) is taken in the one way each framework
can report it exactly for a single call:

* a jitted JAX function: XLA's buffer assignment for the compiled call
  (`xla_bytes`), i.e. arguments + outputs + temporaries - aliased buffers. It is
  static, exact, and the same on CPU and GPU; it does not depend on what else
  the process holds.
* a PyTorch eager call (`torch_bytes`): the bytes its inputs occupy plus the
  high-water mark of what the call allocates on top of them. On CUDA the
  caching allocator's peak counter gives it; on CPU, where PyTorch keeps no such
  counter, the profiler's per-operator allocation records, summed in time
  order (so a transient inside a single operator is missed).

Both count the same thing, the working set of one call, which makes the rows of
a table comparable. Process-wide measures (``ru_maxrss``, RSS sampling) were
rejected: the maximum only ever grows, and allocator caching hides reuse.

Work, for the GFLOP/s column, is counted per framework as exactly as each can:
XLA's cost analysis of a compiled JAX call (`xla_flops`: ``2*m*n*k`` per matrix
product, one per element of each element-wise operation), and the matrix
products that a PyTorch call dispatches (`torch_flops`). The two differ by the
element-wise work, about 1% of every item here. The machine's own limit is
`matmul_peak`, measured, not taken from a data sheet.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock seconds of repeated calls, compilation and warm-up excluded.

  Attributes:
    seconds: every repeat's time, in order: round ``r`` of each interleaved
      call is ``seconds[r]``, so ratios can be taken round by round.
  """

  seconds: tuple[float, ...]

  @property
  def median(self) -> float:
    """The median over the repeats, the figure every table reports."""
    return statistics.median(self.seconds)

  @property
  def minimum(self) -> float:
    """The fastest repeat, a hint of how much load noise the median holds."""
    return min(self.seconds)

  @property
  def repeats(self) -> int:
    """The number of timed calls."""
    return len(self.seconds)


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
  """Times several zero-argument calls, round-robin, and returns their medians.

  Each call must finish its work before returning (``jax.block_until_ready``,
  ``torch.cuda.synchronize``). The calls of one comparison are interleaved
  rather than timed one after another so that a change in the machine's load
  (it is shared) shifts all of them alike and their ratios stay fair.

  Args:
    calls: name -> call.
    repeats: timed rounds, >= 1.
    warmup: untimed rounds first (compilation, caches, thread pools).

  Returns:
    name -> `Timing`.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}.")
  for _ in range(warmup):
    for call in calls.values():
      call()
  seconds: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      seconds[name].append(time.perf_counter() - start)
  return {name: Timing(tuple(s)) for name, s in seconds.items()}


def tree_bytes(tree: Any) -> int:
  """Bytes held by the array leaves of a pytree (JAX, NumPy or PyTorch arrays)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if hasattr(leaf, "nbytes"):
      total += int(leaf.nbytes)
    elif hasattr(leaf, "element_size"):  # a torch.Tensor
      total += leaf.element_size() * leaf.nelement()
  return total


def xla_bytes(jitted: Any, *args: Any, **kwargs: Any) -> int:
  """Bytes XLA assigns to one call of a ``jax.jit`` function on these arguments.

  Arguments + outputs + temporaries - aliased (donated) buffers, from the
  compiled executable's memory analysis; compiling again hits the cache.
  """
  return compiled_bytes(jitted.lower(*args, **kwargs).compile())


def compiled_bytes(compiled: Any) -> int:
  """Bytes XLA assigns to one call of a compiled program (see `xla_bytes`)."""
  stats = compiled.memory_analysis()
  return int(
      stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      + stats.temp_size_in_bytes
      - stats.alias_size_in_bytes
  )


def xla_flops(jitted: Any, *args: Any, **kwargs: Any) -> float | None:
  """Floating-point operations of one call of a ``jax.jit`` function, by XLA's count.

  XLA's cost analysis of the optimized program: what runs after XLA merged
  and removed work (a forward pass shared by two terms counts once). It
  counts the body of a loop once, whatever its trip count. That is left to
  stand for small element-wise loops (the rounds of the PRNG hash that draws
  a dropout mask), but a program whose loop holds a matrix product (an epoch,
  a scan over batches) is refused: count one iteration and multiply.

  Returns:
    The count, or None where the backend gives no cost analysis.

  Raises:
    ValueError: a loop of the optimized program holds a matrix product.
  """
  compiled = jitted.lower(*args, **kwargs).compile()
  if _loop_with_product(compiled.as_text()):
    raise ValueError(
        "a loop of the program holds a matrix product, and XLA's cost "
        "analysis counts a loop's body once: count one iteration and "
        "multiply."
    )
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):  # One entry per program in older JAX.
    costs = costs[0] if costs else None
  if not costs or "flops" not in costs:
    return None
  return float(costs["flops"])


def _loop_with_product(hlo: str) -> bool:
  """Whether a ``while`` of this HLO text runs a ``dot``, in its body or anything it calls."""
  computations = dict(re.findall(r"^(?:ENTRY )?%(\S+) [^\n]*\{\n(.*?)^\}", hlo, re.M | re.S))
  memo: dict[str, bool] = {}

  def has_dot(name: str) -> bool:
    if name not in memo:
      memo[name] = False  # No recursion into a computation already on the path.
      text = computations.get(name, "")
      memo[name] = bool(re.search(r"\bdot\(", text)) or any(
          has_dot(called)
          for called in re.findall(r"%(\S+?)[,})\s]", text)
          if called in computations
      )
    return memo[name]

  return any(has_dot(body) for body in re.findall(r"\bwhile\(.*?body=%([^,\s]+)", hlo))


def torch_flops(call: Callable[[], Any]) -> int:
  """Floating-point operations of the matrix products that one ``call()`` dispatches.

  ``2*m*n*k`` per ``mm``, ``addmm`` and ``bmm``, seen below autograd, so the
  backward pass counts too; element-wise work is not counted. (PyTorch's own
  ``FlopCounterMode`` hooks modules in a way that ``torch.autograd.grad``
  refuses.)
  """
  import torch
  from torch.utils._python_dispatch import TorchDispatchMode

  aten = torch.ops.aten

  class Counter(TorchDispatchMode):
    flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
      if func in (aten.mm.default, aten.addmm.default, aten.bmm.default):
        a, b = args[-2:]
        self.flops += 2 * a.numel() * b.shape[-1]
      return func(*args, **(kwargs or {}))

  with Counter() as counter:
    call()
  return counter.flops


def matmul_peak(sizes: Sequence[int], repeats: int) -> dict[str, dict[str, float]]:
  """The machine's float32 matrix-product rate: the best of square products of ``sizes``.

  Jitted JAX on its default device (the limit every JAX row is held
  against) and NumPy on the host (for reference: another BLAS).

  Args:
    sizes: the ``n`` of ``n x n`` by ``n x n`` products to try.
    repeats: timed calls of each; the fastest counts, a peak being a best case.

  Returns:
    ``{"jax": {"gflops", "size"}, "numpy": {...}}``, the best size of each.
  """
  multiply = jax.jit(jnp.matmul)
  best: dict[str, dict[str, float]] = {}
  for n in sizes:
    a, b = (np.random.default_rng(i).standard_normal((n, n), np.float32) for i in (0, 1))
    ja, jb = jax.device_put(a), jax.device_put(b)
    timings = time_interleaved(
        {
            "jax": lambda ja=ja, jb=jb: multiply(ja, jb).block_until_ready(),
            "numpy": lambda a=a, b=b: np.matmul(a, b),
        },
        repeats,
    )
    for name, timing in timings.items():
      gflops = 2 * n**3 / timing.minimum / 1e9
      if gflops > best.get(name, {}).get("gflops", 0):
        best[name] = {"gflops": gflops, "size": n}
  return best


def torch_bytes(call: Callable[[], Any], inputs: Any, device: str) -> int:
  """Bytes of ``inputs`` plus the peak that one ``call()`` allocates beyond them.

  Args:
    call: the PyTorch computation, run once here.
    inputs: every tensor the call reads (parameters, optimizer state, batch),
      as a pytree or a list; they are resident before the call begins.
    device: ``"cuda"`` or ``"cpu"``.
  """
  import torch  # The peers are optional; nothing imports torch unless asked.

  if device == "cuda":
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
  else:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    with (
        _output_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
      call()
    changes = sorted(
        (event.time_range.end, event.self_cpu_memory_usage)
        for event in prof.events()
        if event.self_cpu_memory_usage
    )
    extra = max(np.cumsum([change for _, change in changes]), default=0)
  return tree_bytes(inputs) + max(int(extra), 0)


@contextlib.contextmanager
def _output_silenced() -> Iterator[None]:
  """Points file descriptors 1 and 2 at /dev/null for the duration.

  The profiler's C++ side prints a line at every start and stop, whatever its
  log-level variable says once the process runs. C's buffers are flushed before
  the descriptors return, or the lines would come out later.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(fd) for fd in (1, 2)]
  try:
    with open(os.devnull, "w") as devnull:
      for fd in (1, 2):
        os.dup2(devnull.fileno(), fd)
      yield
  finally:
    ctypes.CDLL(None).fflush(None)
    for fd, copy in zip((1, 2), saved):
      os.dup2(copy, fd)
      os.close(copy)


def describe_machine() -> dict[str, Any]:
  """The device JAX computes on, the host, its load, and the library versions."""
  device = jax.devices()[0]
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  cpu = _cpu_model()
  name = (
      f"{cpu}, {cores} cores"
      if device.platform == "cpu"
      else f"{device.device_kind} (host: {cpu}, {cores} cores)"
  )
  return {
      "platform": device.platform,
      "device": name,
      "cpu": cpu,
      "cores": cores,
      "load_average": list(os.getloadavg()),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "environment": {
          name: os.environ.get(name)
          for name in ("OMP_WAIT_POLICY", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")
      },
  }


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# The README's opt-in CPU recipe, as a compile option: XLA:CPU (jaxlib 0.10.2)
# hands its YNNPACK library fusions the matrix products only, not also the
# reductions it hands them by default. On a 2-core Intel Xeon those reduction
# fusions ran the compiled epoch's loop body about a third slower than one
# jitted step. The library never sets it; items 3 and 8 time it beside the default.
CPU_RECIPE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
RECIPE_FLAG = "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def with_recipe(*lowered: Any) -> tuple[Any, ...] | None:
  """Each lowered program compiled with `CPU_RECIPE`.

  None off a CPU (the recipe is XLA:CPU's), or where XLA knows no such option.
  """
  if jax.devices()[0].platform != "cpu":
    return None
  try:
    return tuple(program.compile(CPU_RECIPE) for program in lowered)
  except jax.errors.JaxRuntimeError:
    return None


def recipe_note(finding: str) -> str:
  """An item's note on what `CPU_RECIPE` changed: ``finding`` after the recipe's name."""
  return f"CPU recipe (the README's `{RECIPE_FLAG}`, opt-in): {finding}"
