"""The optional peers advjax is measured against, imported if they are installed.

None of them is needed by advjax or by its tests; a peer that cannot be imported
becomes a table row that says why.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import sys
import types
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Peer:
  """One peer library: what the benchmarks call, or why it is missing.

  Attributes:
    name: the distribution's name (``torch``, ``foolbox``, ...).
    handle: the imported module or function, or None when unavailable.
    version: the installed version, or None.
    note: why it is unavailable, or a caveat on how it was used.
  """

  name: str
  handle: Any
  version: str | None
  note: str = ""

  @property
  def available(self) -> bool:
    return self.handle is not None

  def describe(self) -> str:
    """One line for the results: version and caveat, or the reason it is missing."""
    if not self.available:
      return f"not available: {self.note}"
    return f"{self.version}" + (f" ({self.note})" if self.note else "")


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _import(name: str, module: str) -> Peer:
  try:
    return Peer(name, importlib.import_module(module), _version(name))
  except Exception as error:  # Any import failure makes the peer a "missing" row.
    return Peer(name, None, _version(name), _one_line(error))


def _cleverhans() -> Peer:
  """cleverhans 4.0.0's JAX ``fast_gradient_method``, shimmed for current JAX.

  Its module imports ``logsoftmax`` from ``jax.experimental.stax``, which JAX
  has since removed (it lives on as ``jax.example_libraries.stax``, whose
  ``logsoftmax`` is ``jax.nn.log_softmax``). Rather than drop the peer, the
  benchmark provides that one name and says so in the results; the attack code
  measured is cleverhans' own.
  """
  target = "cleverhans.jax.attacks.fast_gradient_method"
  note = ""
  try:
    module = importlib.import_module(target)
  except ModuleNotFoundError as error:
    if error.name != "jax.experimental.stax":
      return Peer("cleverhans", None, _version("cleverhans"), _one_line(error))
    stax = types.ModuleType("jax.experimental.stax")
    stax.logsoftmax = jax.nn.log_softmax
    sys.modules["jax.experimental.stax"] = stax
    note = (
        "imports jax.experimental.stax, gone from current JAX: run with "
        "a one-name shim, logsoftmax = jax.nn.log_softmax"
    )
    try:
      module = importlib.import_module(target)
    except Exception as retry_error:
      return Peer("cleverhans", None, _version("cleverhans"), _one_line(retry_error))
  except Exception as error:
    return Peer("cleverhans", None, _version("cleverhans"), _one_line(error))
  return Peer("cleverhans", module.fast_gradient_method, _version("cleverhans"), note)


def _one_line(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}".splitlines()[0]
  return text[:200]


def load_peers() -> dict[str, Peer]:
  """Imports every peer that is installed: name -> `Peer`."""
  peers = {"torch": _import("torch", "torch")}
  for name in ("foolbox", "torchattacks"):
    # Both sit on PyTorch; without it they cannot run even if installed.
    peers[name] = (
        _import(name, name)
        if peers["torch"].available
        else Peer(name, None, _version(name), "needs torch")
    )
  peers["cleverhans"] = _cleverhans()
  return peers
