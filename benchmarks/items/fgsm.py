"""Item 3: FGSM over the test set against the peers, checking that all make the same examples."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

import advjax
from benchmarks import base
from benchmarks import harness

__all__ = ["ITEM", "RECIPE", "judge"]

# An FGSM pixel may differ between two libraries only where the input gradient
# is a near-tie: this small a fraction of the largest gradient of its example,
# where summation order can flip its sign.
NEAR_TIE = 1e-3
# The row of advjax's FGSM compiled with `benchmarks.harness.CPU_RECIPE`: not a
# peer, so not judged.
RECIPE = "advjax.fgsm (jit), CPU recipe"


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
    flops: work of the whole test set (see `benchmarks.harness`).
  """

  run_batch: Callable[[Any, Any], Any]
  batches: list[tuple[Any, Any]]
  wait: Callable[[Any], Any]
  to_numpy: Callable[[Any], np.ndarray]
  clip: tuple[float, float] | None
  note: str
  peak_bytes: int
  flops: float | None

  def __call__(self) -> list[Any]:
    outputs = [self.run_batch(x, y) for x, y in self.batches]
    self.wait(outputs)
    return outputs

  def examples(self) -> np.ndarray:
    return np.concatenate([self.to_numpy(output) for output in self()])


def fgsm_attacks(bench: base.Bench) -> base.Section:
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
        _over_batches(functools.partial(harness.xla_flops, jitted, params), jax_batches),
    )

  ours = "advjax.fgsm (jit)"
  attacks = {ours: jax_attack(attack, "unclipped, as in the paper")}
  recipe = _with_recipe(attacks[ours], attack, params)
  if recipe is not None:
    attacks[RECIPE] = recipe
  missing: list[base.Row] = []

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
    missing.append(base.missing(name, peer))

  torch_peer = bench.peers["torch"]
  if torch_peer.available:
    from benchmarks import torch_maxout

    dev = bench.torch_device
    net = base.torch_model(bench, params).eval()
    torch_batches = [
        (torch_maxout.tensor(xb, dev), torch_maxout.tensor(yb, dev)) for xb, yb in jax_batches
    ]

    def torch_attack(run_batch: Any, clip: Any, note: str) -> _Attack:
      peak = harness.torch_bytes(
          lambda: run_batch(*torch_batches[0]), [list(net.parameters()), *torch_batches[0]], dev
      )
      flops = _over_batches(
          lambda xb, yb: harness.torch_flops(lambda: run_batch(xb, yb)), torch_batches
      )
      return _Attack(
          run_batch,
          torch_batches,
          lambda _: torch_maxout.synchronize(dev),
          lambda t: t.detach().cpu().numpy(),
          clip,
          note,
          peak,
          flops,
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
      missing.append(base.missing(name, foolbox))
    torchattacks = bench.peers["torchattacks"]
    name = f"torchattacks {torchattacks.version} FGSM (PyTorch {dev})"
    if torchattacks.available:
      attacks[name] = torch_attack(
          torchattacks.handle.FGSM(net, eps=eps),
          (0.0, 1.0),
          "always clips to [0, 1]: compared with advjax's FGSM with clip=(0, 1)",
      )
    else:
      missing.append(base.missing(name, torchattacks))
    attacks[f"plain PyTorch eager FGSM ({dev})"] = torch_attack(
        functools.partial(torch_maxout.fgsm, net, eps=eps),
        None,
        "autograd.grad of cross_entropy w.r.t. x, unclipped",
    )
  else:
    missing += [
        base.Row(f"{peer_name} FGSM", status=f"not run: torch {torch_peer.describe()}")
        for peer_name in ("foolbox", "torchattacks", "plain PyTorch")
    ]

  timings = harness.time_interleaved(attacks, cfg.attack_repeats)
  rows = base.rows(
      timings,
      ours,
      images=len(y),
      memory={name: a.peak_bytes for name, a in attacks.items()},
      notes={name: a.note for name, a in attacks.items()},
      flops={name: a.flops for name, a in attacks.items()},
  )
  for row in rows[1:]:
    found = attacks[row.name]
    row.cross_check = _agreement(found.examples(), reference[found.clip], gradient)
    row.note += (
        f"; equal pixels {row.cross_check['equal_fraction']:.4%}, "
        f"{'agrees' if row.cross_check['passed'] else 'DISAGREES'}"
    )
  section = base.Section(
      f"3. FGSM over {len(y):,} test images in batches of {size:,} "
      f"(maxout {cfg.units}x{cfg.pieces}, eps {eps})",
      "median time over advjax's (above 1: advjax is faster)",
      "advjax fastest (every peer's ratio >= 1)",
      rows + missing,
  )
  judge(section)
  section.notes.append(
      "Peak memory is the working set of one batch's call. Cross-check: a peer agrees "
      "when its adversarial examples equal advjax's (from the same weights) at every "
      "pixel up to 1e-6, except where the input gradient is a near-tie (below "
      f"{NEAR_TIE:g} of its example's largest), whose sign summation order may flip."
  )
  if recipe is not None:
    section.notes.append(_recipe_note(rows))
  return section


def judge(section: base.Section) -> base.Section:
  """Judges item 3 by its fastest peer's ratio; advjax's own rows (default, recipe) are no peers."""
  peer_ratios = [row.ratio for row in section.rows[1:] if row.name != RECIPE and row.ratio]
  return base.judge(
      section,
      min(peer_ratios) if peer_ratios else None,
      1.0,
      at_most=False,
      text="fastest peer takes {:.2f}x",
  )


def _with_recipe(ours: _Attack, attack: Any, params: Any) -> _Attack | None:
  """``ours`` with ``attack`` compiled with the CPU recipe, one program per batch size."""
  shapes = {len(yb): (xb, yb) for xb, yb in ours.batches}
  compiled = harness.with_recipe(*(attack.lower(params, *batch) for batch in shapes.values()))
  if compiled is None:
    return None
  by_size = dict(zip(shapes, compiled))
  return dataclasses.replace(
      ours,
      run_batch=lambda x, y: by_size[len(y)](params, x, y),
      note=f"compiled with {harness.CPU_RECIPE}",
      peak_bytes=harness.compiled_bytes(compiled[0]),
  )


def _recipe_note(rows: list[base.Row]) -> str:
  recipe = next(row for row in rows if row.name == RECIPE)
  peers = [row for row in rows[1:] if row is not recipe and row.seconds]
  fastest = min(peers, key=lambda row: row.seconds, default=None)
  return harness.recipe_note(
      f"advjax's FGSM takes {recipe.ratio:.2f}x its default time"
      + (
          f"; the fastest peer ({fastest.name}) then takes {fastest.seconds / recipe.seconds:.2f}x "
          "advjax's time."
          if fastest
          else "."
      )
  )


def _over_batches(
    count: Callable[[Any, Any], float | None], batches: list[tuple[Any, Any]]
) -> float | None:
  """``count(x, y)`` summed over ``batches``, counted once per batch size."""
  by_size: dict[int, float | None] = {}
  for xb, yb in batches:
    if len(yb) not in by_size:
      by_size[len(yb)] = count(xb, yb)
  counts = [by_size[len(yb)] for _, yb in batches]
  return None if None in counts else float(sum(counts))


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


ITEM = base.Item(("fgsm",), fgsm_attacks)
