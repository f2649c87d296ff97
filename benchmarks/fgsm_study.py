"""Where the time of item 3's FGSM goes, part by part, in jitted JAX and in PyTorch eager.

``python -m benchmarks.fgsm_study [--batch N] [--repeats N] [--flags | --proposal STEPS]``

One FGSM of the maxout network (240 x 5, as in item 3) on a batch of 1,000
images is cut into the parts its gradient is made of: the three forward
products, the max over each unit's pieces, the loss, the backward pass
through the output layer, through each max (the tie mask, the tie count, the
division) and through each hidden layer's transposed product, and the sign
step. Each part is timed alone, from precomputed inputs, as a jitted JAX call
and as the PyTorch operations that autograd runs for it, interleaved; then
the whole FGSM both ways. ``--flags`` reruns the whole jitted FGSM in fresh
processes under each XLA CPU flag that changes which library runs the
products, checking that each gives the same adversarial examples.
``--proposal STEPS`` times advjax's maxout against other forms of its max
(`MAX_FORMS`), round by round, on the work of benchmark items 3, 4 and 8.

A study, not a benchmark item: it prints a table and writes nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import advjax
from advjax import models
from benchmarks import harness

# The flags of jaxlib 0.10.2 (``XLA_FLAGS=--help``) that route products or
# reductions to another kernel library, or change how XLA:CPU emits its loops.
# By default its products and reductions run as YNNPACK fusions ("__ynn_fusion");
# an empty YNN list sends everything back to XLA's own emitters and Eigen.
FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=-reduce",
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
    "--xla_cpu_prefer_vector_width=512",
)


def _setup(batch: int) -> dict[str, Any]:
  """Parameters, a batch, and every intermediate of the forward and backward pass."""
  model = models.maxout_mlp(240, 5)
  params = model.init(jax.random.key(0), jnp.zeros((1, 784)))
  x = jax.random.uniform(jax.random.key(1), (batch, 784))
  y = jnp.arange(batch, dtype=jnp.int32) % 10
  w1, b1 = params["maxout_0"]["kernel"], params["maxout_0"]["bias"]
  w2, b2 = params["maxout_1"]["kernel"], params["maxout_1"]["bias"]
  w3, b3 = params["output"]["kernel"], params["output"]["bias"]
  z1 = x @ w1 + b1
  h1 = _max_pieces(z1)
  z2 = h1 @ w2 + b2
  h2 = _max_pieces(z2)
  logits = h2 @ w3 + b3
  g_logits = jax.grad(lambda s: _loss(s, y))(logits)
  g_h2 = g_logits @ w3.T
  g_z2 = jax.vjp(_max_pieces, z2)[1](g_h2)[0]
  g_h1 = g_z2 @ w2.T
  g_z1 = jax.vjp(_max_pieces, z1)[1](g_h1)[0]
  g_x = g_z1 @ w1.T
  return dict(
      model=model,
      params=params,
      x=x,
      y=y,
      w1=w1,
      b1=b1,
      w2=w2,
      b2=b2,
      w3=w3,
      b3=b3,
      z1=z1,
      h1=h1,
      z2=z2,
      h2=h2,
      logits=logits,
      g_logits=g_logits,
      g_h2=g_h2,
      g_z2=g_z2,
      g_h1=g_h1,
      g_z1=g_z1,
      g_x=g_x,
  )


def _max_pieces(z: jax.Array) -> jax.Array:
  """The maxout layer's max, as advjax takes it (`advjax.models.max_over_pieces`)."""
  return models.max_over_pieces(z.reshape(z.shape[0], -1, 5))


def _loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  return models.maxout_mlp(240, 5).head.loss(logits, y)


def jax_parts(v: dict[str, Any]) -> dict[str, tuple[Callable[..., Any], tuple[Any, ...]]]:
  """Each part as a function to jit and the arrays it takes."""
  eps, loss_fn, n = 0.25, v["model"].loss_fn(), v["x"].shape[0]
  return {
      f"forward: x @ W1 + b1 ({n}x784 by 784x1200)": (
          lambda x, w, b: x @ w + b,
          (v["x"], v["w1"], v["b1"]),
      ),
      "forward: max over 5 pieces, layer 1": (_max_pieces, (v["z1"],)),
      f"forward: h1 @ W2 + b2, max ({n}x240 by 240x1200)": (
          lambda h, w, b: _max_pieces(h @ w + b),
          (v["h1"], v["w2"], v["b2"]),
      ),
      "forward: output layer and loss": (
          lambda h, w, b, y: _loss(h @ w + b, y),
          (v["h2"], v["w3"], v["b3"], v["y"]),
      ),
      "backward: loss to logits": (jax.grad(_loss), (v["logits"], v["y"])),
      "backward: output layer, g @ W3^T": (lambda g, w: g @ w.T, (v["g_logits"], v["w3"])),
      "backward: max over pieces, layer 2": (
          lambda z, g: jax.vjp(_max_pieces, z)[1](g)[0],
          (v["z2"], v["g_h2"]),
      ),
      f"backward: g @ W2^T ({n}x1200 by 1200x240)": (lambda g, w: g @ w.T, (v["g_z2"], v["w2"])),
      "backward: max over pieces, layer 1": (
          lambda z, g: jax.vjp(_max_pieces, z)[1](g)[0],
          (v["z1"], v["g_h1"]),
      ),
      f"backward: g @ W1^T ({n}x1200 by 1200x784)": (lambda g, w: g @ w.T, (v["g_z1"], v["w1"])),
      "sign step: advjax.sign_step (exact |x_adv - x| <= eps)": (
          lambda x, g: advjax.sign_step(x, g, eps),
          (v["x"], v["g_x"]),
      ),
      "sign step: x + eps * sign(g) alone": (
          lambda x, g: x + eps * jnp.sign(g),
          (v["x"], v["g_x"]),
      ),
      # The same two products in both layouts: JAX's kernel is (in, out), so its
      # forward product is NN and its backward NT; nn.Linear's is (out, in).
      f"layout: {n}x784 by 784x1200 as NN": (lambda a, b: a @ b, (v["x"], v["w1"])),
      f"layout: {n}x784 by 784x1200 as NT": (lambda a, b: a @ b.T, (v["x"], v["w1"].T)),
      f"layout: {n}x1200 by 1200x784 as NN": (lambda a, b: a @ b, (v["g_z1"], v["w1"].T)),
      f"layout: {n}x1200 by 1200x784 as NT": (lambda a, b: a @ b.T, (v["g_z1"], v["w1"])),
      "whole: forward and loss": (loss_fn, (v["params"], v["x"], v["y"])),
      "whole: input gradient": (
          lambda p, x, y: advjax.input_grad(loss_fn, p, x, y),
          (v["params"], v["x"], v["y"]),
      ),
      "whole: advjax.fgsm": (
          lambda p, x, y: advjax.fgsm(loss_fn, p, x, y, eps),
          (v["params"], v["x"], v["y"]),
      ),
  }


def torch_parts(v: dict[str, Any]) -> dict[str, Callable[[], Any]]:
  """The PyTorch eager operations autograd runs for each part, same names as `jax_parts`."""
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_maxout

  t = {
      name: torch_maxout.tensor(value, "cpu")
      for name, value in v.items()
      if isinstance(value, jax.Array)
  }
  # nn.Linear's layout: weight (out, in), so the forward product is x @ W^T.
  w1, w2, w3 = (t[name].T.contiguous() for name in ("w1", "w2", "w3"))
  net = torch_maxout.Maxout(v["params"], 5, 0.8, 0.5, "cpu").eval()
  eps = 0.25

  def amax(z):
    return z.view(z.shape[0], -1, 5).amax(-1)

  def amax_backward(z, h, g):
    # What autograd's amax backward runs: the tie mask, the tie count, the division.
    mask = (z.view(z.shape[0], -1, 5) == h.unsqueeze(-1)).to(z.dtype)
    return (g.unsqueeze(-1) * mask / mask.sum(-1, keepdim=True)).view(z.shape)

  def loss_backward(logits, y):
    logits = logits.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    return grad

  def input_grad(x, y):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(net(x), y), x)[0]

  names = list(jax_parts(v))
  calls = [
      lambda: F.linear(t["x"], w1, t["b1"]),
      lambda: amax(t["z1"]),
      lambda: amax(F.linear(t["h1"], w2, t["b2"])),
      lambda: F.cross_entropy(F.linear(t["h2"], w3, t["b3"]), t["y"]),
      lambda: loss_backward(t["logits"], t["y"]),
      lambda: t["g_logits"] @ w3,
      lambda: amax_backward(t["z2"], t["h2"], t["g_h2"]),
      lambda: t["g_z2"] @ w2,
      lambda: amax_backward(t["z1"], t["h1"], t["g_h1"]),
      lambda: t["g_z1"] @ w1,
      lambda: t["x"] + eps * t["g_x"].sign(),
      lambda: t["x"] + eps * t["g_x"].sign(),
      lambda: t["x"] @ t["w1"],
      lambda: t["x"] @ w1.T,
      lambda: t["g_z1"] @ w1,
      lambda: t["g_z1"] @ t["w1"].T,
      lambda: F.cross_entropy(net(t["x"]), t["y"]),
      lambda: input_grad(t["x"], t["y"]),
      lambda: torch_maxout.fgsm(net, t["x"], t["y"], eps),
  ]
  return dict(zip(names, calls, strict=True))


def study(batch: int, repeats: int) -> list[dict[str, Any]]:
  """Times every part both ways, interleaved; one row per part."""
  v = _setup(batch)
  parts = jax_parts(v)
  jitted = {name: (jax.jit(fn), args) for name, (fn, args) in parts.items()}
  calls: dict[str, Callable[[], Any]] = {
      f"jax {name}": functools.partial(lambda f, a: jax.block_until_ready(f(*a)), f, a)
      for name, (f, a) in jitted.items()
  }
  try:
    calls.update({f"torch {name}": call for name, call in torch_parts(v).items()})
  except ImportError:
    pass  # Without PyTorch, the JAX column alone.
  timings = harness.time_interleaved(calls, repeats, warmup=2)
  rows = []
  for name, (f, a) in jitted.items():
    flops = harness.xla_flops(f, *a)
    row = {
        "part": name,
        "jax_ms": timings[f"jax {name}"].median * 1e3,
        "gflops": flops / timings[f"jax {name}"].median / 1e9 if flops else None,
    }
    if f"torch {name}" in timings:
      row["torch_ms"] = timings[f"torch {name}"].median * 1e3
    rows.append(row)
  return rows


def fgsm_time(batch: int, repeats: int) -> dict[str, Any]:
  """Item 3's jitted FGSM (ten batches) against plain PyTorch's, interleaved in this process.

  The ratio, not the milliseconds, is what compares across processes: the
  machine's load shifts both alike.
  """
  v = _setup(batch)
  loss_fn = v["model"].loss_fn()
  attack = jax.jit(lambda p, x, y: advjax.fgsm(loss_fn, p, x, y, 0.25))
  batches = [(jax.random.uniform(jax.random.key(i), (batch, 784)), v["y"]) for i in range(10)]
  calls = {"jax": lambda: jax.block_until_ready([attack(v["params"], x, y) for x, y in batches])}
  try:
    from benchmarks import torch_maxout

    net = torch_maxout.Maxout(v["params"], 5, 0.8, 0.5, "cpu").eval()
    torch_batches = [tuple(torch_maxout.tensor(a, "cpu") for a in b) for b in batches]
    calls["torch"] = lambda: [torch_maxout.fgsm(net, x, y, 0.25) for x, y in torch_batches]
  except ImportError:
    pass
  timings = harness.time_interleaved(calls, repeats)
  text = attack.lower(v["params"], *batches[0]).compile().as_text()
  result = {
      "ms": timings["jax"].median * 1e3,
      "min_ms": timings["jax"].minimum * 1e3,
      "ynn_fusions": text.count('"__ynn_fusion"'),
      "dots": len(re.findall(r"\bdot\(", text)),
      "examples": np.asarray(attack(v["params"], *batches[0])).tolist(),
  }
  if "torch" in timings:
    result["torch_ms"] = timings["torch"].median * 1e3
    result["torch_over_jax"] = timings["torch"].median / timings["jax"].median
  return result


def flag_sweep(batch: int, repeats: int, rounds: int) -> list[dict[str, Any]]:
  """`fgsm_time` under each flag of `FLAGS` and the default, each in a fresh process.

  The flags take turns, ``rounds`` times, so that a change in the machine's
  load spreads over all of them; each row is the median over its rounds.
  """
  results: dict[str, list[dict[str, Any]]] = {}
  reference = None
  for _ in range(rounds):
    for flag in ("",) + FLAGS:
      env = dict(os.environ)
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
      done = subprocess.run(
          [
              sys.executable,
              "-m",
              "benchmarks.fgsm_study",
              "--one",
              "--batch",
              str(batch),
              "--repeats",
              str(repeats),
          ],
          env=env,
          capture_output=True,
          text=True,
      )
      name = flag or "(default)"
      if done.returncode != 0:
        results.setdefault(name, []).append(
            {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        )
        continue
      result = json.loads(done.stdout.strip().splitlines()[-1])
      examples = np.asarray(result.pop("examples"))
      reference = examples if reference is None else reference
      result["equal_pixels"] = float(np.mean(np.abs(examples - reference) <= 1e-6))
      results.setdefault(name, []).append(result)
  rows = []
  for name, runs in results.items():
    good = [run for run in runs if "error" not in run]
    if not good:
      rows.append({"flag": name, **runs[-1]})
      continue
    row = {"flag": name, "rounds": len(good)}
    for key in good[0]:
      values = [run[key] for run in good]
      row[key] = float(np.median(values)) if isinstance(values[0], float) else values[0]
    rows.append(row)
  return rows


def _chain(z: jax.Array) -> jax.Array:
  """The max over the last axis as a chain of ``jnp.maximum``: no reduction in its program."""
  h = z[..., 0]
  for k in range(1, z.shape[-1]):
    h = jnp.maximum(h, z[..., k])
  return h


ADVJAX_MAX = "jnp.max, custom JVP (advjax)"
MAX_FORMS = {
    "jnp.max, JAX's derivative": lambda z: jnp.max(z, axis=-1),
    "chain, custom JVP": models.split_among_ties(_chain),
}
"""Other forms of maxout's max, beside advjax's `advjax.models.max_over_pieces`."""


def proposed_model(max_fn: Callable[[jax.Array], jax.Array]) -> models.Classifier:
  """`advjax.models.maxout_mlp` whose max over pieces is ``max_fn`` (one of `MAX_FORMS`)."""

  class Maxout(models.Maxout):

    def unit_max(self, z: jax.Array) -> jax.Array:
      return max_fn(z)

  today = models.maxout_mlp(240, 5)
  return models.Classifier(Maxout(240, 5), today.head, today.max_col_norm)


def _form_calls(
    model: models.Classifier, v: dict[str, Any], steps: int
) -> tuple[dict[str, Callable[[], Any]], Callable[[], Any]]:
  """One form of the max: items 3, 4 and 8's timed calls, and what the forms must agree on."""
  from advjax import sweeps
  from advjax import train
  from benchmarks.items import _epochs

  params, batches, (train_x, train_y), (sweep_x, sweep_y) = (
      v["params"],
      v["batches"],
      v["train"],
      v["sweep"],
  )
  attack = jax.jit(lambda p, x, y: advjax.fgsm(model.loss_fn(), p, x, y, 0.25))
  first = models.maxout_linear_first(model)
  sweep = jax.jit(
      lambda p, x, y, e: sweeps.epsilon_sweep(model.loss_fn(), first, p, x, y, e, batch_size=50)
  )
  eps_values = jnp.linspace(0.0, 0.5, 32)
  objective = train.Adversarial(0.25, 0.5)
  static, dynamic = train.split_objective(objective, 1)
  state = train.create_train_state(model, jax.random.key(0), train_x[:1], train.recipe_sgd(steps))
  states, key = jax.tree.map(lambda a: a[None], state), jax.random.key(3)
  step = jax.jit(train.make_train_step(model, objective))
  host_x, host_y = np.asarray(train_x), np.asarray(train_y)

  def epoch() -> Any:
    args = (static, dynamic, states, train_x, train_y, key[None])
    return jax.block_until_ready(train.train_epoch(model, *args, batch_size=100))

  calls = {
      "FGSM": lambda: jax.block_until_ready([attack(params, *b) for b in batches]),
      "sweep": lambda: jax.block_until_ready(sweep(params, sweep_x, sweep_y, eps_values)),
      "compiled epoch": epoch,
      "per-step loop": lambda: _epochs.per_step_epoch(step, state, host_x, host_y, key, 100),
  }

  def outputs() -> Any:
    examples = np.concatenate([np.asarray(attack(params, *b)) for b in batches])
    return examples, sweep(params, sweep_x, sweep_y, eps_values).error, epoch()[0].params

  return calls, outputs


def _spread(values: Any) -> str:
  """A ratio's median and range over the rounds."""
  return f"{np.median(values):.3f}x [{np.min(values):.3f}, {np.max(values):.3f}]"


def proposal(batch: int, repeats: int, steps: int) -> list[str]:
  """advjax's maxout against each of `MAX_FORMS`, interleaved, on items 3, 4 and 8's work.

  Each round times, for each form of the max: item 3's FGSM (ten batches of
  ``batch``), item 4's sweep (32 eps over 2,000 images in batches of 50,
  through the linear first layer), and item 8's epoch of ``steps``
  adversarial steps of batch 100, compiled and as the per-step loop; and
  plain PyTorch's FGSM. Every ratio is taken round by round (one process,
  the same data); the lines give its median and range over the rounds, and
  whether the forms agree.
  """
  from benchmarks import torch_maxout

  v = _setup(batch)
  v["batches"] = [(jax.random.uniform(jax.random.key(i), (batch, 784)), v["y"]) for i in range(10)]
  v["train"] = (
      jax.random.uniform(jax.random.key(11), (steps * 100, 784)),
      jnp.arange(steps * 100, dtype=jnp.int32) % 10,
  )
  v["sweep"] = (jax.random.uniform(jax.random.key(12), (2000, 784)), jnp.arange(2000) % 10)
  forms = {ADVJAX_MAX: v["model"]}
  forms.update({name: proposed_model(max_fn) for name, max_fn in MAX_FORMS.items()})
  calls, out = {}, {}
  for form, model in forms.items():
    form_calls, outputs = _form_calls(model, v, steps)
    calls.update({(form, what): call for what, call in form_calls.items()})
    out[form] = outputs()
  net = torch_maxout.Maxout(v["params"], 5, 0.8, 0.5, "cpu").eval()
  torch_batches = [tuple(torch_maxout.tensor(a, "cpu") for a in b) for b in v["batches"]]
  calls[("plain PyTorch", "FGSM")] = lambda: [
      torch_maxout.fgsm(net, x, y, 0.25) for x, y in torch_batches
  ]
  today = out[ADVJAX_MAX]
  lines = []
  for form in MAX_FORMS:
    other = out[form]
    difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(today[2]), jax.tree.leaves(other[2]))
    )
    lines.append(
        f"{form} against advjax's: FGSM examples equal on {np.mean(today[0] == other[0]):.6f} "
        f"of pixels; sweep errors equal: {bool(np.all(today[1] == other[1]))}; compiled "
        f"epochs' parameters: largest difference {difference:.3g}"
    )
  lines.append(f"load before timing: {os.getloadavg()}")
  timings = harness.time_interleaved(calls, repeats)
  lines.append(f"load after timing: {os.getloadavg()}")
  seconds = {name: np.asarray(t.seconds) for name, t in timings.items()}
  for (form, what), t in timings.items():
    spread = _spread(seconds[form, what] / t.median)
    lines.append(f"{form + ', ' + what:40s} {t.median * 1e3:10.1f} ms, over the median {spread}")
  torch_fgsm = seconds["plain PyTorch", "FGSM"]
  for form in forms:
    lines.append(
        f"{form}: item 3, plain PyTorch / advjax FGSM {_spread(torch_fgsm / seconds[form, 'FGSM'])}"
    )
    compiled = seconds[form, "compiled epoch"] / seconds[form, "per-step loop"]
    lines.append(f"{form}: item 8, compiled / per-step {_spread(compiled)}")
  for form in MAX_FORMS:
    for what in ("FGSM", "sweep", "compiled epoch", "per-step loop"):
      ratio = seconds[form, what] / seconds[ADVJAX_MAX, what]
      lines.append(f"{form} / advjax's, {what}: {_spread(ratio)}")
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.fgsm_study", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--batch", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument(
      "--flags", action="store_true", help="time the whole FGSM under each XLA CPU flag of FLAGS"
  )
  parser.add_argument(
      "--rounds", type=int, default=3, help="with --flags: turns each flag takes (default 3)"
  )
  parser.add_argument(
      "--proposal",
      type=int,
      metavar="STEPS",
      default=None,
      help="time advjax's maxout against each form of MAX_FORMS, interleaved, on items 3, "
      "4 and 8's work (an epoch of STEPS steps), and check they agree",
  )
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.one:
    print(json.dumps(fgsm_time(args.batch, args.repeats)))
    return 0
  if args.proposal:
    print("\n".join(proposal(args.batch, args.repeats, args.proposal)))
    return 0
  if args.flags:
    for row in flag_sweep(args.batch, args.repeats, args.rounds):
      print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    return 0
  print(f"{'part':58s} {'JAX ms':>8s} {'torch ms':>9s} {'JAX GFLOP/s':>12s}")
  for row in study(args.batch, args.repeats):
    torch_ms = f"{row['torch_ms']:9.3f}" if "torch_ms" in row else f"{'-':>9s}"
    gflops = f"{row['gflops']:12.1f}" if row["gflops"] else f"{'-':>12s}"
    print(f"{row['part']:58s} {row['jax_ms']:8.3f} {torch_ms} {gflops}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
