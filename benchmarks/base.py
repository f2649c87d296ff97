"""What every benchmark item shares: the sizes, the fixture, the result model, the adapters.

An item is a module of `benchmarks.items` that declares an `Item`: the keys
of its sections in ``results.json`` and the function that measures them from
the `Bench` fixture. Each section holds its rows (one per implementation,
timed interleaved by `harness.time_interleaved`), the ratio of each row to the
item's baseline row, the peak memory of each row, and whether the item's
target is met.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import statistics
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from advjax import data as advjax_data
from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import train
from benchmarks import harness
from benchmarks import peers as peers_lib

__all__ = [
    "FULL",
    "QUICK",
    "STUDY_EPS",
    "Bench",
    "Config",
    "Item",
    "Row",
    "Section",
    "combine",
    "judge",
    "missing",
    "on_gpu",
    "prepare",
    "record",
    "rows",
    "run_jax",
    "run_torch",
    "torch_model",
    "total",
]

# The training-time eps study of issue 13: one member per eps, alpha 0.5.
STUDY_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes and repeat counts of a run.

  Attributes:
    name: ``"full"`` or ``"quick"``, recorded with the results.
    units, pieces: the maxout network's width (240 x 5 in the paper).
    batch: examples per training step (100).
    test_examples: images attacked and swept (the 10,000 of MNIST's test set).
    sweep_eps: epsilons of the sweep (32).
    sweep_batch: examples per batch inside `advjax.epsilon_sweep` on a CPU, where
      the K activations of a batch should stay in cache (50 ran 2x faster than
      1,000 here); an accelerator takes the whole set in one batch.
    members: ensemble size (12).
    attack_batch: images per FGSM call when attacking the test set.
    train_steps: SGD steps that train the attacked model before the attacks.
    step_repeats, attack_repeats, sweep_repeats, ensemble_repeats,
      epoch_repeats, members_repeats: timed calls per row, chosen so that the
      full run fits in 10 minutes on 2 cores. An epoch item's call is a whole
      epoch of every member (10 to 20 s for one member on 2 cores, a minute or
      two for 5 or 7), hence one call a row for the member items.
    seeds: members of the vmapped-seeds epoch item (5).
    study_eps: the eps of each member of the eps-study epoch item (7 values).
    wide_units: width of the wide epoch item (1600, the paper's M5), a GPU target.
    wide_on_cpu: whether a CPU run measures the wide epoch too (about 15x the
      work of the 240-unit one: a minute or more an epoch on 2 cores).
    peak_sizes, peak_repeats: the square float32 matrix products that measure
      the machine's matmul peak, and the timed calls of each.
    eps, alpha: the paper's FGSM step and clean-term weight on MNIST.
    autoattack_examples, autoattack_eps: test images and radius of the
      AutoAttack items (12, 13).
    autoattack_steps, autoattack_targets, autoattack_queries: its budget, on
      both sides: APGD-CE, APGD-T and FAB-T steps, targets of APGD-T and
      FAB-T, Square's queries (the reference's "standard": 100, 9, 5,000).
    autoattack_repeats: timed calls a row of the AutoAttack items.
    curve_eps: the radii of the AutoAttack curve (item 13).
  """

  name: str
  units: int
  pieces: int
  batch: int
  test_examples: int
  sweep_eps: int
  sweep_batch: int
  members: int
  attack_batch: int
  train_steps: int
  step_repeats: int
  attack_repeats: int
  sweep_repeats: int
  ensemble_repeats: int
  epoch_repeats: int
  members_repeats: int
  seeds: int
  study_eps: tuple[float, ...]
  wide_units: int
  wide_on_cpu: bool
  peak_sizes: tuple[int, ...]
  peak_repeats: int
  eps: float = 0.25
  alpha: float = 0.5
  autoattack_examples: int = 1000
  autoattack_eps: float = 0.1
  autoattack_steps: int = 100
  autoattack_targets: int = 9
  autoattack_queries: int = 5000
  autoattack_repeats: int = 1
  curve_eps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)


FULL = Config(
    "full",
    units=240,
    pieces=5,
    batch=100,
    test_examples=10_000,
    sweep_eps=32,
    sweep_batch=50,
    members=12,
    attack_batch=1000,
    train_steps=500,
    step_repeats=60,
    attack_repeats=7,
    sweep_repeats=2,
    ensemble_repeats=10,
    epoch_repeats=2,
    members_repeats=1,
    seeds=5,
    study_eps=STUDY_EPS,
    wide_units=1600,
    wide_on_cpu=False,
    peak_sizes=(1024, 2048),
    peak_repeats=5,
)
QUICK = Config(
    "quick",
    units=16,
    pieces=2,
    batch=20,
    test_examples=200,
    sweep_eps=4,
    sweep_batch=50,
    members=3,
    attack_batch=100,
    train_steps=5,
    step_repeats=2,
    attack_repeats=2,
    sweep_repeats=2,
    ensemble_repeats=2,
    epoch_repeats=2,
    members_repeats=2,
    seeds=5,
    study_eps=STUDY_EPS,
    wide_units=24,
    wide_on_cpu=False,
    peak_sizes=(128, 256),
    peak_repeats=3,
    autoattack_examples=16,
    autoattack_steps=3,
    autoattack_targets=1,
    autoattack_queries=10,
    curve_eps=(0.1, 0.3),
)


@dataclasses.dataclass
class Row:
  """One implementation's figures in a comparison.

  Attributes:
    name: what was run.
    status: ``"ok"``, or why the row has no figures (a peer not installed).
    seconds: median wall-clock seconds of one call.
    min_seconds: fastest call.
    repeats: timed calls.
    ratio: ``seconds`` over the baseline row's ``seconds``; over repeated runs
      (`combine`), the median of the runs' ratios.
    ratio_min, ratio_max: the range of the ratio over the runs.
    throughput: images per second, for items that process a set of images.
    peak_bytes: working set of one call (see `benchmarks.harness`).
    flops: floating-point operations of one call (see `benchmarks.harness`).
    gflops: ``flops`` over ``seconds``, in GFLOP/s.
    note: how it was run.
    cross_check: agreement with the item's reference (the same adversarial
      examples as advjax's, the same parameters as the per-step loop...).
  """

  name: str
  status: str = "ok"
  seconds: float | None = None
  min_seconds: float | None = None
  repeats: int | None = None
  ratio: float | None = None
  ratio_min: float | None = None
  ratio_max: float | None = None
  throughput: float | None = None
  peak_bytes: int | None = None
  flops: float | None = None
  gflops: float | None = None
  note: str = ""
  cross_check: dict[str, Any] | None = None


@dataclasses.dataclass
class Section:
  """One comparison: its rows, its target and whether the measurement meets it.

  ``gpu_target`` is the target a GPU run of the item judges (``target`` unless
  the item sets another); the report lists them while no GPU run is recorded.
  ``measured`` is the figure judged against the target (`judge`) or recorded
  (`record`); over repeated runs (`combine`) it is the median of the runs'
  figures, listed in ``measured_runs``, and ``met`` judges that median.
  """

  title: str
  ratio_meaning: str
  target: str
  rows: list[Row]
  measured: float | None = None
  measured_text: str = "-"
  met: bool | None = None
  notes: list[str] = dataclasses.field(default_factory=list)
  gpu_target: str = ""
  measured_runs: list[float | None] = dataclasses.field(default_factory=list)
  measured_format: str = "{}"
  bound: float | None = None
  at_most: bool = True

  def __post_init__(self) -> None:
    self.gpu_target = self.gpu_target or self.target


@dataclasses.dataclass
class Bench:
  """What every item shares: sizes, peers, data, the model and its trained weights.

  ``objective`` is the paper's adversarial objective and ``adversarial_step``
  its jitted train step, made once so that the items that time or count it
  share one compilation.
  """

  config: Config
  peers: dict[str, peers_lib.Peer]
  model: models.Classifier
  objective: train.Objective
  adversarial_step: Callable[..., Any]
  params: Any
  train_x: jax.Array
  train_y: jax.Array
  test_x: jax.Array
  test_y: jax.Array
  torch_device: str | None

  @property
  def batch(self) -> tuple[jax.Array, jax.Array]:
    n = self.config.batch
    return self.train_x[:n], self.train_y[:n]


@dataclasses.dataclass(frozen=True)
class Item:
  """One benchmark item: what it measures and where its sections go in ``results.json``.

  Attributes:
    keys: the ``results.json`` key of each section it returns, in order.
    measure: ``bench -> section or sections``, one per key.
  """

  keys: tuple[str, ...]
  measure: Callable[[Bench], Section | list[Section]]

  def sections(self, bench: Bench) -> list[Section]:
    """Measures the item's sections; an error if they do not match its keys."""
    produced = self.measure(bench)
    sections = produced if isinstance(produced, list) else [produced]
    if len(sections) != len(self.keys):
      raise ValueError(
          f"item {self.measure.__name__} made {len(sections)} sections for keys {self.keys}."
      )
    return sections


def rows(
    timings: dict[str, harness.Timing],
    baseline: str,
    *,
    memory: dict[str, int],
    notes: dict[str, str],
    flops: dict[str, float | None],
    images: int | None = None,
) -> list[Row]:
  """Rows in the order of ``timings``, with ratios to the ``baseline`` row."""
  base = timings[baseline].median
  made = []
  for name, t in timings.items():
    work = flops.get(name)
    made.append(
        Row(
            name,
            seconds=t.median,
            min_seconds=t.minimum,
            repeats=t.repeats,
            ratio=t.median / base,
            throughput=None if images is None else images / t.median,
            peak_bytes=memory.get(name),
            flops=work,
            gflops=None if work is None else work / t.median / 1e9,
            note=notes.get(name, ""),
        )
    )
  return made


def missing(name: str, peer: peers_lib.Peer) -> Row:
  return Row(name, status=f"not run: {peer.name} {peer.describe()}")


def judge(
    section: Section, measured: float | None, bound: float, *, at_most: bool, text: str
) -> Section:
  """Records the measured figure of ``section`` and judges it against its bound."""
  section.bound, section.at_most = bound, at_most
  return record(section, measured, text)


def record(section: Section, measured: float | None, text: str) -> Section:
  """Records the measured figure of ``section``, formatted by ``text`` (``"{:.2f}x"``).

  The figure is judged if `judge` gave the section a bound.
  """
  section.measured, section.measured_format, section.measured_runs = measured, text, [measured]
  if measured is not None:
    section.measured_text = text.format(measured)
    if section.bound is not None:
      section.met = measured <= section.bound if section.at_most else measured >= section.bound
  return section


def combine(runs: list[Section]) -> Section:
  """One item's section over repeated runs: each ratio's median and range.

  The rows keep the last run's figures (memory, work, cross-checks, notes),
  with the median seconds and ratio over the runs and the ratio's range;
  the measured figure is the median of the runs' figures, judged again.

  Args:
    runs: the same section from each run, in order.

  Returns:
    The combined section; ``runs[0]`` itself for a single run.
  """
  if len(runs) == 1:
    return runs[0]
  section = copy.deepcopy(runs[-1])
  for i, row in enumerate(section.rows):
    ratios = [run.rows[i].ratio for run in runs if run.rows[i].ratio is not None]
    seconds = [run.rows[i].seconds for run in runs if run.rows[i].seconds is not None]
    if ratios:
      row.ratio = statistics.median(ratios)
      row.ratio_min, row.ratio_max = min(ratios), max(ratios)
    if seconds and row.seconds is not None:
      median = statistics.median(seconds)
      if row.throughput is not None:
        row.throughput *= row.seconds / median
      if row.gflops is not None:
        row.gflops *= row.seconds / median
      row.seconds = median
      row.min_seconds = min(run.rows[i].min_seconds or math.inf for run in runs)
      row.repeats = sum(run.rows[i].repeats or 0 for run in runs)
  figures = [run.measured for run in runs]
  known = [figure for figure in figures if figure is not None]
  if known:
    record(section, statistics.median(known), section.measured_format)
    spec = re.search(r"\{[^}]*\}", section.measured_format)
    number = (spec.group() if spec else "{}").format
    section.measured_text += f" [{number(min(known))}, {number(max(known))}]"
  section.measured_runs = figures
  return section


def run_jax(fn: Callable[..., Any], *args: Any) -> None:
  jax.block_until_ready(fn(*args))


def run_torch(dev: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  from benchmarks import torch_maxout

  out = fn(*args, **kwargs)
  torch_maxout.synchronize(dev)
  return out


def torch_model(bench: Bench, params: Any) -> Any:
  from benchmarks import torch_maxout

  module = bench.model.module
  return torch_maxout.Maxout(
      params, module.pieces, module.input_keep, module.hidden_keep, bench.torch_device
  )


def total(times: int, *counts: float | None) -> float | None:
  """``times`` the sum of ``counts``, or None if any count is unknown."""
  return None if None in counts else times * float(sum(counts))


def on_gpu() -> bool:
  return jax.devices()[0].platform == "gpu"


def _load_data(config: Config, data_dir: str | None) -> tuple[tuple[np.ndarray, ...], str]:
  """Train and test images: MNIST from ``data_dir``, else random images of its shape.

  Speed does not depend on the pixels, and the cross-check holds for any
  weights and inputs; the synthetic fallback keeps the quick run and its test
  free of the data set.
  """
  needed_train = config.train_steps * config.batch
  if data_dir is not None:
    mnist = advjax_data.load_mnist(data_dir)
    return (
        (
            mnist.train.x[:needed_train],
            mnist.train.y[:needed_train],
            mnist.test.x[: config.test_examples],
            mnist.test.y[: config.test_examples],
        ),
        f"MNIST from {data_dir}",
    )
  rng = np.random.default_rng(0)
  arrays = []
  for n in (needed_train, config.test_examples):
    arrays += [rng.random((n, 784), np.float32), rng.integers(0, 10, n, dtype=np.int32)]
  return tuple(arrays), "synthetic: uniform random images, random labels (no data folder given)"


def prepare(config: Config, data_dir: str | None) -> tuple[Bench, str, str]:
  """Loads the data, trains the attacked model briefly, imports the peers."""
  (train_x, train_y, test_x, test_y), data_text = _load_data(config, data_dir)
  model = models.maxout_mlp(config.units, config.pieces)
  fit = loop.fit(
      model,
      advjax_data.Split(train_x, train_y),
      loop.TrainConfig(epochs=1, batch_size=config.batch),
      progress=False,
  )
  error, _ = evaluation.score(model, fit.params, test_x, test_y)
  model_text = (
      f"maxout {config.units}x{config.pieces} (2 maxout layers, dropout, "
      f"column-norm 1.9365), trained one epoch of {config.train_steps} clean "
      f"SGD steps (batch {config.batch}) on {len(train_y):,} training images; "
      f"test error {error:.2%}. Its weights serve items 3 and 4; "
      "the other items train from freshly initialised states"
  )
  peers = peers_lib.load_peers()
  torch_device = None
  if peers["torch"].available:
    from benchmarks import torch_maxout

    torch_device = torch_maxout.device()
  objective = train.Adversarial(config.eps, config.alpha)
  bench = Bench(
      config,
      peers,
      model,
      objective,
      jax.jit(train.make_train_step(model, objective)),
      fit.params,
      jnp.asarray(train_x),
      jnp.asarray(train_y),
      jnp.asarray(test_x),
      jnp.asarray(test_y),
      torch_device,
  )
  return bench, data_text, model_text
