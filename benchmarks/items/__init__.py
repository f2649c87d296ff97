"""The benchmark items, in the order they run and appear in ``RESULTS.md``.

Each module declares its `benchmarks.base.Item` as ``ITEM``: the
``results.json`` keys of its sections and the function that measures them.
To add an item, write a module here with its ``ITEM`` and list it below.
"""

from benchmarks.items import autoattack
from benchmarks.items import ensemble
from benchmarks.items import epoch
from benchmarks.items import fgsm
from benchmarks.items import members
from benchmarks.items import sharded_step
from benchmarks.items import sweep
from benchmarks.items import train_step
from benchmarks.items import wide_epoch

__all__ = ["ITEMS", "keys"]

ITEMS = (
    train_step.ITEM,
    fgsm.ITEM,
    sweep.ITEM,
    ensemble.ITEM,
    sharded_step.ITEM,
    epoch.ITEM,
    members.ITEM,
    wide_epoch.ITEM,
    autoattack.ITEM,
    autoattack.CURVE_ITEM,
)


def keys() -> list[str]:
  """Every section's ``results.json`` key, in order."""
  return [key for item in ITEMS for key in item.keys]
