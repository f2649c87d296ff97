"""The paper's maxout network and its adversarial training step in PyTorch eager.

This is what a PyTorch user would write for the same model and objective as
`advjax.models.maxout_mlp` trained with `advjax.train.Adversarial`, built from
the same Flax parameters so that both frameworks compute the same function:
one dropout mask per step shared by the attack, the clean and the adversarial
term, SGD with momentum, then the max column-norm projection. Importing this
module needs torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def device() -> str:
  """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``: the peers run beside JAX's device."""
  return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(dev: str) -> None:
  """Waits for queued GPU work, so that a timed call has really finished."""
  if dev == "cuda":
    torch.cuda.synchronize()


def tensor(array: Any, dev: str) -> torch.Tensor:
  """A JAX or NumPy array as a tensor on ``dev`` (int32 labels become int64, as torch wants)."""
  array = np.asarray(array)
  if array.dtype.kind == "i":
    array = array.astype(np.int64)
  return torch.from_numpy(array.copy()).to(dev)


class Maxout(torch.nn.Module):
  """Maxout layers, then a linear output layer, with optional dropout masks.

  Attributes:
    hidden: the maxout layers' affine maps; unit j of a layer owns output
      columns ``j*pieces .. j*pieces + pieces - 1``, as in the Flax model.
    output: the linear output layer.
  """

  def __init__(
      self, params: Any, pieces: int, input_keep: float, hidden_keep: float, dev: str
  ) -> None:
    super().__init__()
    names = sorted(name for name in params if name.startswith("maxout_"))
    self.pieces = pieces
    self.keeps = (input_keep,) + (hidden_keep,) * len(names)
    self.hidden = torch.nn.ModuleList(_linear(params[name]) for name in names)
    self.output = _linear(params["output"])
    self.to(dev)

  def dropout_masks(self, batch: int) -> list[torch.Tensor]:
    """Inverted-dropout masks for the input of every layer, for one step."""
    widths = [self.hidden[0].in_features] + [
        layer.out_features // self.pieces for layer in self.hidden
    ]
    dev = self.output.weight.device
    return [
        torch.bernoulli(torch.full((batch, width), keep, device=dev)) / keep
        for width, keep in zip(widths, self.keeps)
    ]

  def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    h = x
    for index, layer in enumerate(self.hidden):
      if masks is not None:
        h = h * masks[index]
      z = layer(h)
      h = z.view(z.shape[0], -1, self.pieces).amax(-1)
    if masks is not None:
      h = h * masks[-1]
    return self.output(h)

  @torch.no_grad()
  def constrain(self, max_norm: float) -> None:
    """Scales each unit's (or piece's) incoming weights to L2 norm <= ``max_norm``."""
    for layer in [*self.hidden, self.output]:
      # A torch weight is (out, in): row i is the flax kernel's column i.
      layer.weight.renorm_(2, 0, max_norm)


def _linear(layer_params: Any) -> torch.nn.Linear:
  kernel = np.asarray(layer_params["kernel"])
  linear = torch.nn.Linear(*kernel.shape)
  with torch.no_grad():
    linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
    linear.bias.copy_(torch.from_numpy(np.asarray(layer_params["bias"]).copy()))
  return linear


def sgd(model: Maxout) -> torch.optim.Optimizer:
  """The recipe's optimizer at its first update: learning rate 0.1, momentum 0.5."""
  return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)


def train_step(
    model: Maxout,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | None,
    alpha: float,
    max_norm: float,
) -> torch.Tensor:
  """One update on ``alpha*J(x) + (1-alpha)*J(x_adv)``, or on ``J(x)`` when ``eps`` is None.

  The clean backward pass yields the parameter gradient and the input
  gradient together, as the efficient form of eq. (6) must: two forward and
  two backward passes in all.
  """
  masks = model.dropout_masks(x.shape[0])
  optimizer.zero_grad(set_to_none=True)
  if eps is None:
    loss = F.cross_entropy(model(x, masks), y)
    loss.backward()
  else:
    x = x.detach().requires_grad_(True)
    clean = F.cross_entropy(model(x, masks), y)
    (alpha * clean).backward()
    x_adv = (x + eps * x.grad.sign()).detach()
    adversarial = F.cross_entropy(model(x_adv, masks), y)
    ((1 - alpha) * adversarial).backward()
    loss = alpha * clean.detach() + (1 - alpha) * adversarial.detach()
  optimizer.step()
  model.constrain(max_norm)
  return loss


def fgsm(model: Maxout, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
  """Plain PyTorch FGSM: ``x + eps * sign(grad_x cross_entropy)``, unclipped, no dropout."""
  x = x.detach().requires_grad_(True)
  loss = F.cross_entropy(model(x), y)
  (grad,) = torch.autograd.grad(loss, x)
  return (x + eps * grad.sign()).detach()
