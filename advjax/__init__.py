"""advjax: adversarial examples and adversarial training as composable JAX transforms.

The core (attacks, objectives, metrics) takes any ``loss_fn(params, x, y)`` over
any params pytree and imports neither Flax nor data loading. Models, data and
training live beside it in `advjax.models`, `advjax.data`, `advjax.train` and
their siblings, which load on first use: ``import advjax`` imports none of
Flax, orbax or tensorflow-datasets, and ``advjax.data.load_mnist`` works
without a separate import.
"""

import importlib

from advjax.apgd import apgd
from advjax.apgd import apgd_checkpoints
from advjax.apgd import cross_entropy
from advjax.apgd import dlr_loss
from advjax.apgd import targeted_dlr_loss
from advjax.attacks import broadcast_eps
from advjax.attacks import fgsm
from advjax.attacks import input_grad
from advjax.attacks import pgd
from advjax.attacks import project_linf
from advjax.attacks import sign_step
from advjax.attacks import targeted_fgsm
from advjax.autoattack import ATTACKS
from advjax.autoattack import AutoAttackResult
from advjax.autoattack import attack_robust
from advjax.autoattack import autoattack
from advjax.autoattack import autoattack_curve
from advjax.autoattack import autoattack_report
from advjax.autoattack import masking_flags
from advjax.autoattack import standard_attacks
from advjax.ensembles import ensemble_logits
from advjax.ensembles import ensemble_loss
from advjax.ensembles import ensemble_probs
from advjax.ensembles import ensemble_size
from advjax.ensembles import ensemble_step
from advjax.ensembles import init_ensemble
from advjax.ensembles import member
from advjax.ensembles import stack
from advjax.ensembles import unstack
from advjax.fab import fab_targeted
from advjax.fab import project_onto_halfspace_linf
from advjax.metrics import error_and_confidence
from advjax.metrics import mistakes
from advjax.metrics import rubbish_error_and_confidence
from advjax.objectives import adversarial_loss
from advjax.objectives import l1_norm
from advjax.objectives import logistic_loss
from advjax.objectives import logistic_worst_case_loss
from advjax.objectives import nfgsm_loss
from advjax.objectives import noise_loss
from advjax.objectives import pgd_loss
from advjax.objectives import random_start_fgsm_loss
from advjax.objectives import rubbish_inputs
from advjax.objectives import sign_noise
from advjax.objectives import trades_loss
from advjax.objectives import uniform_noise
from advjax.square import margin
from advjax.square import square
from advjax.square import square_fraction
from advjax.sweeps import LinearFirst
from advjax.sweeps import SweepResult
from advjax.sweeps import direction_sweep
from advjax.sweeps import epsilon_sweep

__version__ = "0.1.0"

__all__ = [
    "ATTACKS",
    "AutoAttackResult",
    "LinearFirst",
    "SweepResult",
    "adversarial_loss",
    "apgd",
    "apgd_checkpoints",
    "attack_robust",
    "autoattack",
    "autoattack_curve",
    "autoattack_report",
    "broadcast_eps",
    "cross_entropy",
    "direction_sweep",
    "dlr_loss",
    "ensemble_logits",
    "ensemble_loss",
    "ensemble_probs",
    "ensemble_size",
    "ensemble_step",
    "epsilon_sweep",
    "error_and_confidence",
    "fab_targeted",
    "fgsm",
    "init_ensemble",
    "input_grad",
    "l1_norm",
    "logistic_loss",
    "logistic_worst_case_loss",
    "margin",
    "masking_flags",
    "member",
    "mistakes",
    "nfgsm_loss",
    "noise_loss",
    "pgd",
    "pgd_loss",
    "project_linf",
    "project_onto_halfspace_linf",
    "random_start_fgsm_loss",
    "rubbish_error_and_confidence",
    "rubbish_inputs",
    "sign_noise",
    "sign_step",
    "square",
    "square_fraction",
    "stack",
    "standard_attacks",
    "targeted_dlr_loss",
    "targeted_fgsm",
    "trades_loss",
    "uniform_noise",
    "unstack",
]

# Submodules beside the core, imported by `__getattr__` when first used.
_SUBMODULES = ("checkpoint", "data", "evaluation", "loop", "models", "sharding", "train")


def __getattr__(name: str):
  if name in _SUBMODULES:
    try:
      return importlib.import_module(f"advjax.{name}")
    except ModuleNotFoundError as error:
      if error.name != f"advjax.{name}":
        raise  # a dependency of the submodule is missing: say which
  raise AttributeError(f"module 'advjax' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_SUBMODULES))
