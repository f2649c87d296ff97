"""advjax: adversarial examples and adversarial training as composable JAX transforms.

The core (attacks, objectives, metrics) takes any ``loss_fn(params, x, y)`` over
any params pytree and imports neither Flax nor data loading. Models, data and
training live beside it in `advjax.models`, `advjax.data` and `advjax.train`.
"""

from advjax.attacks import broadcast_eps
from advjax.attacks import fgsm
from advjax.attacks import input_grad
from advjax.attacks import pgd
from advjax.attacks import sign_step
from advjax.attacks import targeted_fgsm
from advjax.metrics import error_and_confidence
from advjax.metrics import rubbish_error_and_confidence
from advjax.objectives import adversarial_loss
from advjax.objectives import logistic_loss
from advjax.objectives import logistic_worst_case_loss
from advjax.objectives import noise_loss
from advjax.objectives import rubbish_inputs
from advjax.objectives import sign_noise
from advjax.objectives import uniform_noise

__version__ = "0.1.0"

__all__ = [
    "adversarial_loss",
    "broadcast_eps",
    "error_and_confidence",
    "fgsm",
    "input_grad",
    "logistic_loss",
    "logistic_worst_case_loss",
    "noise_loss",
    "pgd",
    "rubbish_error_and_confidence",
    "rubbish_inputs",
    "sign_noise",
    "sign_step",
    "targeted_fgsm",
    "uniform_noise",
]
