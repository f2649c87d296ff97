"""Scripts that reproduce the paper's experiments with advjax; run them with ``python -m``."""
