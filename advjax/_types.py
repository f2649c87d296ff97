"""The type aliases of advjax's signatures, declared once.

Annotations only: JAX accepts any pytree as parameters, so ``Params`` is
``Any``; a loss takes ``(params, x, y)`` and a logits function ``(params, x)``,
the two shapes of function that the attacks and objectives are written over.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

Array = jax.Array
Params = Any
LossFn = Callable[[Params, Array, Array], Array]
LogitsFn = Callable[[Params, Array], Array]
Clip = tuple[Any, Any] | None
