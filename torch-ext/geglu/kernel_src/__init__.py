"""Triton kernels for GeGLU. Everything that runs on the device lives in this folder:
`launch.py` (the launch layer every kernel shares), `pointwise.py` (the two pointwise kernels and
their launch tables), `gelu_math.py` (GELU and its derivative, once)."""

from .pointwise import choose_config, launch_geglu_backward, launch_geglu_forward, regime_configs, tiles_config

__all__ = ["launch_geglu_forward", "launch_geglu_backward", "choose_config", "regime_configs", "tiles_config"]
