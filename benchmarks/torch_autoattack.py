"""torchattacks' AutoAttack on advjax's maxout weights: the reference side of the comparisons.

Importing this module needs torch and torchattacks (3.5.1, ``pip install
--no-deps torchattacks==3.5.1``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchattacks

from benchmarks import torch_maxout


class Images(torch.nn.Module):
  """A flat-input network taking ``(batch, 1, 28, 28)`` images, as torchattacks wants."""

  def __init__(self, net: torch.nn.Module) -> None:
    super().__init__()
    self.net = net

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.net(x.reshape(x.shape[0], -1))


def maxout_net(model: Any, params: Any, dev: str = "cpu") -> torch.nn.Module:
  """advjax's maxout (``models.maxout_mlp``) with ``params``, in PyTorch, in eval mode."""
  module = model.module
  maxout = torch_maxout.Maxout(params, module.pieces, module.input_keep, module.hidden_keep, dev)
  return Images(maxout).eval()


def attacks(
    net: torch.nn.Module,
    eps: float,
    *,
    steps: int = 100,
    targets: int = 9,
    queries: int = 5000,
) -> dict[str, Any]:
  """torchattacks' parts of AutoAttack standard, with the reference's settings, and all four.

  torchattacks' own ``AutoAttack(version="standard")`` runs APGD, APGD-T and
  FAB with its default 10 steps; these take the reference's (fra31/auto-attack)
  100, and attack the ``targets`` classes ranked 2nd, 3rd, ... as it does.

  Returns:
    ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square`` and ``autoattack`` (the four
    in sequence, each on the points still robust: torchattacks' ``MultiAttack``).
  """
  classes = targets + 1
  parts = {
      "apgd-ce": torchattacks.APGD(net, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0),
      "apgd-t": torchattacks.APGDT(
          net, eps=eps, steps=steps, n_restarts=1, n_classes=classes, seed=0
      ),
      "fab-t": torchattacks.FAB(
          net, eps=eps, steps=steps, multi_targeted=True, n_classes=classes, n_restarts=1, seed=0
      ),
      "square": torchattacks.Square(
          net, eps=eps, n_queries=queries, n_restarts=1, resc_schedule=False, seed=0
      ),
  }
  parts["autoattack"] = torchattacks.MultiAttack(list(parts.values()))
  return parts


def shipped(net: torch.nn.Module, eps: float) -> Any:
  """torchattacks' ``AutoAttack(version="standard")`` as shipped (10 APGD and FAB steps)."""
  return torchattacks.AutoAttack(net, eps=eps, version="standard", seed=0)


def images(x: Any, dev: str = "cpu") -> torch.Tensor:
  """Flat images as a ``(batch, 1, 28, 28)`` tensor on ``dev``."""
  return torch_maxout.tensor(np.asarray(x).reshape(-1, 1, 28, 28), dev)


def robust(net: torch.nn.Module, attack: Any, x: Any, y: Any, dev: str = "cpu") -> np.ndarray:
  """The robust mask of ``attack`` on flat images ``x`` with labels ``y``."""
  labels = torch_maxout.tensor(y, dev)
  adversarial = attack(images(x, dev), labels)
  with torch.no_grad():
    return (net(adversarial).argmax(1) == labels).cpu().numpy()
