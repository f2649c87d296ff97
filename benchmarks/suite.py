"""The benchmark items, each a comparison timed in one process: see the package docstring.

Every item returns a `Section`: its rows (one per implementation, timed
interleaved by `harness.time_interleaved`), the ratio of each row to the item's
baseline row, the peak memory of each row, and whether the item's target is met.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import advjax
from advjax import data as advjax_data
from advjax import ensembles
from advjax import evaluation
from advjax import loop
from advjax import models
from advjax import sharding
from advjax import sweeps
from advjax import train
from benchmarks import harness
from benchmarks import peers as peers_lib
from benchmarks import report


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
    step_repeats, attack_repeats, sweep_repeats, ensemble_repeats: timed
      calls per row, chosen so that the full run fits in 10 minutes on 2 cores.
    eps, alpha: the paper's FGSM step and clean-term weight on MNIST.
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
  eps: float = 0.25
  alpha: float = 0.5


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
)

# An FGSM pixel may differ between two libraries only where the input gradient
# is a near-tie: this small a fraction of the largest gradient of its example,
# where summation order can flip its sign.
NEAR_TIE = 1e-3


@dataclasses.dataclass
class Row:
  """One implementation's figures in a comparison.

  Attributes:
    name: what was run.
    status: ``"ok"``, or why the row has no figures (a peer not installed).
    seconds: median wall-clock seconds of one call.
    min_seconds: fastest call.
    repeats: timed calls.
    ratio: ``seconds`` over the baseline row's ``seconds``.
    throughput: images per second, for items that process a set of images.
    peak_bytes: working set of one call (see `benchmarks.harness`).
    note: how it was run.
    cross_check: for attacks, agreement with advjax's adversarial examples.
  """

  name: str
  status: str = "ok"
  seconds: float | None = None
  min_seconds: float | None = None
  repeats: int | None = None
  ratio: float | None = None
  throughput: float | None = None
  peak_bytes: int | None = None
  note: str = ""
  cross_check: dict[str, Any] | None = None


@dataclasses.dataclass
class Section:
  """One comparison: its rows, its target and whether the measurement meets it."""

  title: str
  ratio_meaning: str
  target: str
  rows: list[Row]
  measured: float | None = None
  measured_text: str = "-"
  met: bool | None = None
  notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Bench:
  """What every item shares: sizes, peers, data, the model and its trained weights."""

  config: Config
  peers: dict[str, peers_lib.Peer]
  model: models.Classifier
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


def _rows(
    timings: dict[str, harness.Timing],
    baseline: str,
    *,
    memory: dict[str, int],
    notes: dict[str, str],
    images: int | None = None,
) -> list[Row]:
  """Rows in the order of ``timings``, with ratios to the ``baseline`` row."""
  base = timings[baseline].median
  return [
      Row(
          name,
          seconds=t.median,
          min_seconds=t.minimum,
          repeats=t.repeats,
          ratio=t.median / base,
          throughput=None if images is None else images / t.median,
          peak_bytes=memory.get(name),
          note=notes.get(name, ""),
      )
      for name, t in timings.items()
  ]


def _missing(name: str, peer: peers_lib.Peer) -> Row:
  return Row(name, status=f"not run: {peer.name} {peer.describe()}")


def _judge(
    section: Section, measured: float | None, bound: float, *, at_most: bool, text: str
) -> Section:
  """Records the measured figure of ``section`` against its bound."""
  section.measured = measured
  if measured is not None:
    section.measured_text = text.format(measured)
    section.met = measured <= bound if at_most else measured >= bound
  return section


# ---------------------------------------------------------------------------
# Items 1 and 2: the adversarial train step.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NaiveAdversarial:
  """Eq. (6) as first written: FGSM, then the gradient of the two-term loss.

  As written that is three forward and three backward passes (the attack's,
  the clean term's, the adversarial term's); XLA may merge some of them.
  """

  eps: float
  alpha: float

  def __call__(self, loss_fn: advjax.attacks.LossFn, key: jax.Array) -> advjax.attacks.LossFn:
    del key

    def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
      x_adv = jax.lax.stop_gradient(advjax.fgsm(loss_fn, params, x, y, self.eps))
      return self.alpha * loss_fn(params, x, y) + (1 - self.alpha) * loss_fn(params, x_adv, y)

    return loss


def train_steps(bench: Bench) -> list[Section]:
  """Items 1 and 2: adversarial vs clean step, vs naive, vs PyTorch eager."""
  cfg, model = bench.config, bench.model
  state = train.create_train_state(
      model, jax.random.key(0), bench.train_x[:1], train.recipe_sgd(steps_per_epoch=500)
  )
  batch, rng = bench.batch, jax.random.key(1)
  clean, adversarial, naive = (
      "advjax clean step",
      "advjax adversarial step",
      "naive adversarial step (JAX)",
  )
  steps = {
      clean: jax.jit(train.make_train_step(model, train.Clean())),
      adversarial: jax.jit(train.make_train_step(model, train.Adversarial(cfg.eps, cfg.alpha))),
      naive: jax.jit(train.make_train_step(model, NaiveAdversarial(cfg.eps, cfg.alpha))),
  }
  calls = {
      name: functools.partial(_run_jax, step, state, batch, rng) for name, step in steps.items()
  }
  memory = {name: harness.xla_bytes(step, state, batch, rng) for name, step in steps.items()}
  notes = {
      clean: "make_train_step(model, Clean()): dropout, SGD+momentum, column-norm projection",
      adversarial: "make_train_step(model, Adversarial(0.25)): adversarial_loss, 2 fwd + 2 bwd",
      naive: "x_adv = stop_gradient(fgsm(...)); grad of a*J(x) + (1-a)*J(x_adv)",
  }
  torch_adv, torch_clean = "PyTorch eager adversarial step", "PyTorch eager clean step"
  torch_peer = bench.peers["torch"]
  if torch_peer.available:
    from benchmarks import torch_maxout

    dev = bench.torch_device
    net = _torch_model(bench, state.params)
    optimizer = torch_maxout.sgd(net)
    x, y = (torch_maxout.tensor(a, dev) for a in batch)
    for name, eps in ((torch_adv, cfg.eps), (torch_clean, None)):
      calls[name] = functools.partial(
          _run_torch,
          dev,
          torch_maxout.train_step,
          net,
          optimizer,
          x,
          y,
          eps=eps,
          alpha=cfg.alpha,
          max_norm=models.MAX_COL_NORM,
      )
    notes[torch_adv] = (
        "same model, shared dropout mask, torch.optim.SGD; one backward "
        "yields param and input gradients"
    )
    notes[torch_clean] = "same step on J(x) alone"
  timings = harness.time_interleaved(calls, cfg.step_repeats)
  if torch_peer.available:
    momentum = [entry["momentum_buffer"] for entry in optimizer.state.values()]
    for name in (torch_adv, torch_clean):
      memory[name] = harness.torch_bytes(calls[name], [list(net.parameters()), momentum, x, y], dev)

  step_rows = _rows(
      {k: timings[k] for k in (clean, adversarial, naive)}, clean, memory=memory, notes=notes
  )
  item1 = Section(
      f"1. Adversarial train step vs clean (maxout {cfg.units}x{cfg.pieces}, batch {cfg.batch})",
      "median time over the advjax clean step's",
      "adversarial / clean <= 1.8",
      step_rows,
  )
  _judge(item1, step_rows[1].ratio, 1.8, at_most=True, text="{:.2f}x")
  item1.notes.append(
      f"The naive objective takes {timings[naive].median / timings[adversarial].median:.2f}x "
      "the time of advjax's adversarial step. Matrix-product work of the adversarial step "
      f"over the clean one: {_matmul_work_ratio(state.params):.2f}x (the floor where the "
      "products dominate, as on a CPU)."
  )

  torch_names = [adversarial] + ([torch_adv, torch_clean] if torch_peer.available else [])
  torch_rows = _rows({k: timings[k] for k in torch_names}, adversarial, memory=memory, notes=notes)
  if not torch_peer.available:
    torch_rows += [_missing(torch_adv, torch_peer), _missing(torch_clean, torch_peer)]
  item2 = Section(
      f"2. Adversarial train step: advjax vs PyTorch eager ({bench.torch_device or 'no torch'})",
      "median time over advjax's adversarial step's (above 1: advjax is faster)",
      "PyTorch / advjax >= 1.5",
      torch_rows,
  )
  if torch_peer.available:
    _judge(item2, torch_rows[1].ratio, 1.5, at_most=False, text="{:.2f}x")
    item2.notes.append(
        "PyTorch's own adversarial / clean ratio: "
        f"{timings[torch_adv].median / timings[torch_clean].median:.2f}x."
    )
  return [item1, item2]


def _matmul_work_ratio(params: Any) -> float:
  """Multiply-adds of the adversarial step's matrix products over the clean step's.

  With layer costs ``c_i`` (inputs x outputs): a clean step runs the forward
  pass, the weight gradients and the input gradients of every layer but the
  first; the adversarial step runs forward and weight gradients twice, the
  first layer's input gradient too (it makes the FGSM example), and the other
  layers' input gradients twice. Hence more than 2x for a wide first layer.
  """
  costs = [
      np.prod(leaf.shape)
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if getattr(path[-1], "key", None) == "kernel"
  ]
  first, above = costs[0], sum(costs[1:])
  clean = 2 * (first + above) + above
  return (4 * (first + above) + first + 2 * above) / clean


def _run_jax(fn: Callable[..., Any], *args: Any) -> None:
  jax.block_until_ready(fn(*args))


def _run_torch(dev: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  from benchmarks import torch_maxout

  out = fn(*args, **kwargs)
  torch_maxout.synchronize(dev)
  return out


def _torch_model(bench: Bench, params: Any) -> Any:
  from benchmarks import torch_maxout

  module = bench.model.module
  return torch_maxout.Maxout(
      params, module.pieces, module.input_keep, module.hidden_keep, bench.torch_device
  )


# ---------------------------------------------------------------------------
# Item 3: FGSM over the test set, against the peers.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Attack:
  """One implementation of FGSM, run over the test set batch by batch.

  Attributes:
    run_batch: ``(x, y) -> adversarial x`` for one batch.
    batches: the test set, already split and placed on the implementation's device.
    wait: blocks until the outputs of ``run_batch`` are computed.
    to_numpy: one output as a NumPy array.
    clip: the box it clips to, to compare it with advjax's FGSM under the same box.
    note: how it was called.
    peak_bytes: working set of one batch's call.
  """

  run_batch: Callable[[Any, Any], Any]
  batches: list[tuple[Any, Any]]
  wait: Callable[[Any], Any]
  to_numpy: Callable[[Any], np.ndarray]
  clip: tuple[float, float] | None
  note: str
  peak_bytes: int

  def __call__(self) -> list[Any]:
    outputs = [self.run_batch(x, y) for x, y in self.batches]
    self.wait(outputs)
    return outputs

  def examples(self) -> np.ndarray:
    return np.concatenate([self.to_numpy(output) for output in self()])


def fgsm_attacks(bench: Bench) -> Section:
  """Item 3: images per second of FGSM, and agreement of every peer with advjax.

  Every implementation gets the test set in the same batches (1,000 images, the
  default of `advjax.evaluation.fgsm_examples`; larger ones ran slower here, their
  activations falling out of cache) from a Python loop, as a data loader would
  feed it.
  """
  cfg, model, params = bench.config, bench.model, bench.params
  x, y, eps, size = bench.test_x, bench.test_y, cfg.eps, cfg.attack_batch
  jax_batches = [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
  loss_fn = model.loss_fn()
  attack = jax.jit(lambda p, x, y: advjax.fgsm(loss_fn, p, x, y, eps))
  clipped = jax.jit(lambda p, x, y: advjax.fgsm(loss_fn, p, x, y, eps, clip=(0.0, 1.0)))
  reference = {
      None: np.asarray(attack(params, x, y)),
      (0.0, 1.0): np.asarray(clipped(params, x, y)),
  }
  gradient = np.asarray(jax.jit(lambda p, x, y: advjax.input_grad(loss_fn, p, x, y))(params, x, y))

  def jax_attack(jitted: Any, note: str) -> _Attack:
    return _Attack(
        functools.partial(jitted, params),
        jax_batches,
        jax.block_until_ready,
        np.asarray,
        None,
        note,
        harness.xla_bytes(jitted, params, *jax_batches[0]),
    )

  ours = "advjax.fgsm (jit)"
  attacks = {ours: jax_attack(attack, "unclipped, as in the paper")}
  missing: list[Row] = []

  name = "cleverhans 4.0.0 fast_gradient_method (jit)"
  peer = bench.peers["cleverhans"]
  if peer.available:
    fgm = peer.handle
    cleverhans_attack = jax.jit(
        lambda p, x, y: fgm(
            functools.partial(model.scores, p), x, eps, np.inf, y=jax.nn.one_hot(y, 10)
        )
    )
    attacks[name] = jax_attack(
        cleverhans_attack,
        "per-example vmap(grad), true labels one-hot, unclipped"
        + (f"; {peer.note}" if peer.note else ""),
    )
  else:
    missing.append(_missing(name, peer))

  torch_peer = bench.peers["torch"]
  if torch_peer.available:
    from benchmarks import torch_maxout

    dev = bench.torch_device
    net = _torch_model(bench, params).eval()
    torch_batches = [
        (torch_maxout.tensor(xb, dev), torch_maxout.tensor(yb, dev)) for xb, yb in jax_batches
    ]

    def torch_attack(run_batch: Any, clip: Any, note: str) -> _Attack:
      peak = harness.torch_bytes(
          lambda: run_batch(*torch_batches[0]), [list(net.parameters()), *torch_batches[0]], dev
      )
      return _Attack(
          run_batch,
          torch_batches,
          lambda _: torch_maxout.synchronize(dev),
          lambda t: t.detach().cpu().numpy(),
          clip,
          note,
          peak,
      )

    foolbox = bench.peers["foolbox"]
    name = f"foolbox {foolbox.version} FGSM (PyTorch {dev})"
    if foolbox.available:
      # Bounds wider than x +- eps never clip: the paper's unclipped FGSM.
      fmodel = foolbox.handle.PyTorchModel(net, bounds=(-eps, 1 + eps), device=dev)
      fb_attack = foolbox.handle.attacks.FGSM()
      attacks[name] = torch_attack(
          lambda xb, yb: fb_attack(fmodel, xb, yb, epsilons=eps)[1],
          None,
          "attack(fmodel, x, y, epsilons=0.25), bounds that never clip; includes "
          "foolbox's success check (one more forward pass)",
      )
    else:
      missing.append(_missing(name, foolbox))
    torchattacks = bench.peers["torchattacks"]
    name = f"torchattacks {torchattacks.version} FGSM (PyTorch {dev})"
    if torchattacks.available:
      attacks[name] = torch_attack(
          torchattacks.handle.FGSM(net, eps=eps),
          (0.0, 1.0),
          "always clips to [0, 1]: compared with advjax's FGSM with clip=(0, 1)",
      )
    else:
      missing.append(_missing(name, torchattacks))
    attacks[f"plain PyTorch eager FGSM ({dev})"] = torch_attack(
        functools.partial(torch_maxout.fgsm, net, eps=eps),
        None,
        "autograd.grad of cross_entropy w.r.t. x, unclipped",
    )
  else:
    missing += [
        Row(f"{peer_name} FGSM", status=f"not run: torch {torch_peer.describe()}")
        for peer_name in ("foolbox", "torchattacks", "plain PyTorch")
    ]

  timings = harness.time_interleaved(attacks, cfg.attack_repeats)
  rows = _rows(
      timings,
      ours,
      images=len(y),
      memory={name: a.peak_bytes for name, a in attacks.items()},
      notes={name: a.note for name, a in attacks.items()},
  )
  for row in rows[1:]:
    found = attacks[row.name]
    row.cross_check = _agreement(found.examples(), reference[found.clip], gradient)
    row.note += (
        f"; equal pixels {row.cross_check['equal_fraction']:.4%}, "
        f"{'agrees' if row.cross_check['passed'] else 'DISAGREES'}"
    )
  section = Section(
      f"3. FGSM over {len(y):,} test images in batches of {size:,} "
      f"(maxout {cfg.units}x{cfg.pieces}, eps {eps})",
      "median time over advjax's (above 1: advjax is faster)",
      "advjax fastest (every peer's ratio >= 1)",
      rows + missing,
  )
  peer_ratios = [row.ratio for row in rows[1:]]
  _judge(
      section,
      min(peer_ratios) if peer_ratios else None,
      1.0,
      at_most=False,
      text="fastest peer takes {:.2f}x",
  )
  section.notes.append(
      "Peak memory is the working set of one batch's call. Cross-check: a peer agrees "
      "when its adversarial examples equal advjax's (from the same weights) at every "
      "pixel up to 1e-6, except where the input gradient is a near-tie (below "
      f"{NEAR_TIE:g} of its example's largest), whose sign summation order may flip."
  )
  return section


def _agreement(theirs: np.ndarray, ours: np.ndarray, gradient: np.ndarray) -> dict[str, Any]:
  """How far a peer's adversarial examples agree with advjax's, pixel by pixel."""
  theirs = theirs.reshape(ours.shape)
  unequal = np.abs(theirs - ours) > 1e-6
  scale = np.max(np.abs(gradient), axis=-1, keepdims=True)
  relative = np.abs(gradient) / np.maximum(scale, np.finfo(np.float32).tiny)
  worst = float(relative[unequal].max()) if unequal.any() else 0.0
  return {
      "equal_fraction": float(1 - unequal.mean()),
      "unequal_pixels": int(unequal.sum()),
      "largest_relative_gradient_where_unequal": worst,
      "passed": worst <= NEAR_TIE,
  }


# ---------------------------------------------------------------------------
# Item 4: the epsilon sweep.
# ---------------------------------------------------------------------------


def epsilon_sweeps(bench: Bench) -> Section:
  """Item 4: `advjax.epsilon_sweep` against a loop of jitted FGSM and evaluation."""
  cfg, model, params = bench.config, bench.model, bench.params
  x, y = bench.test_x, bench.test_y
  eps_values = jnp.linspace(0.0, 2 * cfg.eps, cfg.sweep_eps)
  loss_fn, probs_fn, split = model.loss_fn(), model.probabilities, models.maxout_linear_first(model)
  batch = cfg.sweep_batch if jax.devices()[0].platform == "cpu" else None

  attack = jax.jit(lambda p, x, y, e: advjax.fgsm(loss_fn, p, x, y, e))
  evaluate = jax.jit(lambda p, x, y: advjax.error_and_confidence(probs_fn(p, x), y))

  def loop() -> list[Any]:
    return jax.block_until_ready([evaluate(params, attack(params, x, y, e), y) for e in eps_values])

  def sweep_with(fn: Any) -> Callable[..., sweeps.SweepResult]:
    return jax.jit(
        lambda p, x, y, e: sweeps.epsilon_sweep(loss_fn, fn, p, x, y, e, batch_size=batch)
    )

  names = (
      "idiomatic loop: jitted fgsm + jitted evaluation per eps",
      "advjax.epsilon_sweep, linear first layer (LinearFirst)",
      "advjax.epsilon_sweep, generic model function",
  )
  fast, generic = sweep_with(split), sweep_with(probs_fn)
  calls = {
      names[0]: loop,
      names[1]: functools.partial(_run_jax, fast, params, x, y, eps_values),
      names[2]: functools.partial(_run_jax, generic, params, x, y, eps_values),
  }
  memory = {
      names[0]: max(
          harness.xla_bytes(attack, params, x, y, eps_values[0]),
          harness.xla_bytes(evaluate, params, x, y),
      ),
      names[1]: harness.xla_bytes(fast, params, x, y, eps_values),
      names[2]: harness.xla_bytes(generic, params, x, y, eps_values),
  }
  notes = {
      names[0]: f"{cfg.sweep_eps} x (fgsm on all {len(y):,} images, then evaluation)",
      names[1]: (
          f"batches of {batch or len(y):,}: one input gradient per batch, the "
          "first layer on x and on sign(grad) once, the layers above per eps"
      ),
      names[2]: (
          f"batches of {batch or len(y):,}: one input gradient per batch, the "
          "whole model per eps"
      ),
  }
  # The cross-check runs every call once, compiling it: that is the warm-up.
  looped = np.array([float(error) for error, _ in loop()])
  differences = {
      name: float(np.max(np.abs(np.asarray(fn(params, x, y, eps_values).error) - looped)))
      for name, fn in ((names[1], fast), (names[2], generic))
  }
  timings = harness.time_interleaved(calls, cfg.sweep_repeats, warmup=0)
  rows = _rows(timings, names[0], memory=memory, notes=notes)
  section = Section(
      f"4. Epsilon sweep, {cfg.sweep_eps} values over {len(y):,} test images",
      "median time over the loop's",
      "sweep / loop <= 0.15",
      rows,
  )
  _judge(section, rows[1].ratio, 0.15, at_most=True, text="{:.3f}x")
  for row in rows[1:]:
    row.cross_check = {"max_error_difference_vs_loop": differences[row.name]}
  section.notes.append(
      "Cross-check: the largest difference between a sweep's error curve and the "
      "loop's is "
      + ", ".join(f"{d:.2g}" for d in differences.values())
      + " (fast path, generic path)."
  )
  return section


# ---------------------------------------------------------------------------
# Item 5: the ensemble step.
# ---------------------------------------------------------------------------


def ensemble_step(bench: Bench) -> Section:
  """Item 5: one vmapped step of N members against N sequential steps."""
  cfg, model = bench.config, bench.model
  members = cfg.members
  tx = train.recipe_sgd(steps_per_epoch=500)
  sample = bench.train_x[:1]
  states = ensembles.init_ensemble(
      lambda key: train.create_train_state(model, key, sample, tx), jax.random.key(2), members
  )
  rngs = jax.random.split(jax.random.key(3), members)
  single = train.make_train_step(model, train.Clean())
  step = jax.jit(single)
  vmapped = jax.jit(ensembles.ensemble_step(single))
  singles = ensembles.unstack(states)
  batch = bench.batch

  def sequential() -> None:
    jax.block_until_ready([step(s, batch, r) for s, r in zip(singles, rngs)])

  names = (f"{members} sequential jitted steps", "one vmapped step (ensembles.ensemble_step)")
  calls = {
      names[0]: sequential,
      names[1]: functools.partial(_run_jax, vmapped, states, batch, rngs),
  }
  one_state = harness.tree_bytes(singles[0])
  memory = {
      names[0]: harness.xla_bytes(step, singles[0], batch, rngs[0]) + (members - 1) * one_state,
      names[1]: harness.xla_bytes(vmapped, states, batch, rngs),
  }
  notes = {
      names[0]: "make_train_step(model, Clean()) per member; memory: one step's "
      f"working set + the other {members - 1} members' states",
      names[1]: "jit(ensemble_step(train_step)), shared batch, one rng per member",
  }
  timings = harness.time_interleaved(calls, cfg.ensemble_repeats)
  rows = _rows(timings, names[0], memory=memory, notes=notes)
  on_gpu = jax.devices()[0].platform == "gpu"
  bound = 1 / 3 if on_gpu else 1.0
  section = Section(
      f"5. Ensemble of {members} maxout {cfg.units}x{cfg.pieces}: one training step, "
      f"batch {cfg.batch}",
      "median time over the sequential steps'",
      "vmapped / sequential <= 0.33 (GPU)" if on_gpu else "vmapped / sequential <= 1.0 (CPU)",
      rows,
  )
  return _judge(section, rows[1].ratio, bound, at_most=True, text="{:.2f}x")


def sharded_step(bench: Bench) -> Section:
  """The adversarial step data-parallel over 1, 2 and 4 devices (the scale-out issue).

  On a CPU the devices are forced host devices (``benchmarks/__init__.py``)
  sharing the machine's cores, so this records what sharding costs there
  rather than a speed-up; on a machine with several accelerators it is the
  scaling of one step.
  """
  cfg, model = bench.config, bench.model
  counts = [n for n in (1, 2, 4) if n <= jax.device_count() and cfg.batch % n == 0]
  tx = train.recipe_sgd(steps_per_epoch=500)
  state = train.create_train_state(model, jax.random.key(0), bench.train_x[:1], tx)
  rng = jax.random.key(1)
  calls, memory, notes = {}, {}, {}
  for n in counts:
    mesh = sharding.data_mesh(n)
    replicated = sharding.replicated(mesh)
    step = jax.jit(
        train.make_train_step(model, train.Adversarial(cfg.eps, cfg.alpha)),
        in_shardings=(replicated, sharding.split_leading(mesh), replicated),
        out_shardings=(replicated, replicated),
    )
    args = (sharding.replicate(state, mesh), sharding.shard_batch(bench.batch, mesh), rng)
    name = f"{n} device{'s' if n > 1 else ''}"
    calls[name] = functools.partial(_run_jax, step, *args)
    memory[name] = harness.xla_bytes(step, *args)
    notes[name] = (
        f"make_train_step(model, Adversarial(0.25)) jitted over data_mesh({n}): "
        f"{cfg.batch // n} examples per device; memory summed over devices"
    )
  timings = harness.time_interleaved(calls, cfg.step_repeats)
  rows = _rows(timings, next(iter(calls)), memory=memory, notes=notes)
  platform = jax.devices()[0].platform
  section = Section(
      f"7. Adversarial train step, data-parallel over {', '.join(map(str, counts))} "
      f"{platform} devices, maxout {cfg.units}x{cfg.pieces}, global batch {cfg.batch}",
      "median time over the 1-device step's",
      "a record, no target: forced host devices share the CPU's cores"
      if platform == "cpu"
      else "a record, no target",
      rows,
  )
  section.measured = rows[-1].ratio
  section.measured_text = f"{rows[-1].ratio:.2f}x on {counts[-1]} device(s)"
  return section


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


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
      "items 1, 2 and 5 time steps from freshly initialised states"
  )
  peers = peers_lib.load_peers()
  torch_device = None
  if peers["torch"].available:
    from benchmarks import torch_maxout

    torch_device = torch_maxout.device()
  bench = Bench(
      config,
      peers,
      model,
      fit.params,
      jnp.asarray(train_x),
      jnp.asarray(train_y),
      jnp.asarray(test_x),
      jnp.asarray(test_y),
      torch_device,
  )
  return bench, data_text, model_text


ITEMS: tuple[Callable[[Bench], Section | list[Section]], ...] = (
    train_steps,
    fgsm_attacks,
    epsilon_sweeps,
    ensemble_step,
    sharded_step,
)
KEYS = ("adversarial_step", "vs_pytorch", "fgsm", "sweep", "ensemble", "sharded_step")


def run(
    config: Config = FULL,
    out: str | pathlib.Path | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Runs every item and writes ``results.json`` and ``RESULTS.md`` into ``out``.

  Args:
    config: `FULL` or `QUICK` (or any sizes).
    out: output folder; None writes nothing.
    data_dir: folder of the MNIST IDX files, or None for synthetic images.
    log: receives one line per finished item.

  Returns:
    This run's entry of ``results.json``.
  """
  start = time.perf_counter()
  machine = harness.describe_machine()
  log(f"benchmarks ({config.name}) on {machine['device']}, load {machine['load_average']}")
  bench, data_text, model_text = prepare(config, data_dir)
  sections: list[Section] = []
  for item in ITEMS:
    produced = item(bench)
    for section in produced if isinstance(produced, list) else [produced]:
      log(f"  {section.title}: {section.measured_text} (target {section.target})")
      sections.append(section)
  entry = {
      "machine": machine,
      "load_average_end": list(os.getloadavg()),
      "seconds": time.perf_counter() - start,
      "config": dataclasses.asdict(config),
      "data": data_text,
      "model": model_text,
      "peers": {name: peer.describe() for name, peer in bench.peers.items()},
      "benchmarks": {key: dataclasses.asdict(section) for key, section in zip(KEYS, sections)},
  }
  if out is not None:
    for path in report.write(entry, pathlib.Path(out)):
      log(f"wrote {path}")
  return entry
