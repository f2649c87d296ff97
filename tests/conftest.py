"""Test-wide JAX settings.

Four CPU devices, so that the sharding tests can build meshes of 1, 2 and 4
devices on a one-CPU machine (`--xla_force_host_platform_device_count`). Every
other test runs on the first device as usual. Set before any JAX backend starts.

Full float32 matrix products: the tests compare implementations to float32
tolerances, which TF32 (a GPU's default) and bfloat16 passes (a TPU's) miss.
On a CPU this changes nothing.
"""

import jax

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_default_matmul_precision", "highest")
