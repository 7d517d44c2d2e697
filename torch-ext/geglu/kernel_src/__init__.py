"""Triton kernels for GeGLU. Everything that runs on the device lives in this folder."""

from .geglu_pointwise import (
    launch_geglu_backward,
    launch_geglu_forward,
    pointwise_launch_config,
    pointwise_launch_configs,
    tiles_config,
)

__all__ = ["launch_geglu_forward", "launch_geglu_backward", "pointwise_launch_config", "pointwise_launch_configs",
           "tiles_config"]
