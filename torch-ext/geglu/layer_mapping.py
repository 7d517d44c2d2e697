"""The layer-mapping metadata shipped with the kernel (layer_mapping.json) and its reader.

Readable without importing transformers: every class is named by module path + class name.
"""

import json
from pathlib import Path

import torch.nn as nn

_METADATA_FILE = Path(__file__).with_name("layer_mapping.json")


_METADATA = json.loads(_METADATA_FILE.read_text(encoding="utf-8"))
# Read once at import: forward passes (and torch.compile traces) only see constants.
_ACTIVATION_NAMES = {
    approximate: frozenset(_METADATA["activations"][approximate]) for approximate in ("tanh", "none")
}


def load_layer_mapping() -> dict:
    """The parsed layer_mapping.json (a fresh copy; the caller may modify it)."""
    return json.loads(_METADATA_FILE.read_text(encoding="utf-8"))


def _approximate_of_class(cls: type) -> str | None:
    for klass in cls.__mro__:
        for approximate, names in _ACTIVATION_NAMES.items():
            if klass.__name__ in names:
                return approximate
    return None


def approximate_of(act_fn: nn.Module) -> str:
    """'tanh' or 'none' for a GELU-family activation module; ValueError for anything else."""
    if isinstance(act_fn, nn.GELU):
        return act_fn.approximate
    approximate = _approximate_of_class(type(act_fn))
    if approximate is None:
        raise ValueError(
            f"activation {type(act_fn).__name__} is not a GELU this kernel implements; "
            "supported: nn.GELU and transformers' " + ", ".join(sorted(_known_names()))
        )
    return approximate


def _known_names() -> frozenset[str]:
    return _ACTIVATION_NAMES["tanh"] | _ACTIVATION_NAMES["none"]
