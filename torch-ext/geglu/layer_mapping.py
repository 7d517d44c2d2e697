"""The layer-mapping metadata shipped with the kernel (layer_mapping.json) and the code that
acts on it: which transformers classes each layer serves, under which conditions, how the
activation variant is chosen, and the kernels mapping that sends those classes to our layers.

The JSON is the single source of truth; it is readable without importing transformers
(classes are named by module path + class name).

    k = kernels.get_kernel("<repo-id>", version=2, trust_remote_code=True)
    mapping = k.layer_mapping.register(model)          # tag the model's GeGLU classes
    with kernels.use_kernel_mapping(mapping):
        kernels.kernelize(model, mode=kernels.Mode.INFERENCE, device="cuda")
"""

import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import torch.nn as nn

_METADATA_FILE = Path(__file__).with_name("layer_mapping.json")
_METADATA = json.loads(_METADATA_FILE.read_text(encoding="utf-8"))
# Read once at import: forward passes (and torch.compile traces) only see constants.
_ACTIVATION_NAMES = {
    approximate: frozenset(_METADATA["activations"][approximate]) for approximate in ("tanh", "none")
}
# The folder the loader imported us from, symlinks NOT resolved: in the Hub cache the files of
# snapshots/<commit>/build/<variant>/ are symlinks into blobs/, where no build variant exists.
_PACKAGE_DIR = Path(os.path.abspath(__file__)).parent


def load_layer_mapping() -> dict:
    """The parsed layer_mapping.json (a fresh copy; the caller may modify it)."""
    return json.loads(_METADATA_FILE.read_text(encoding="utf-8"))


# --- activation variant ---

def _class_approximate(cls: type) -> str | None:
    for klass in cls.__mro__:
        for approximate, names in _ACTIVATION_NAMES.items():
            if klass.__name__ in names:
                return approximate
    return None


_approximate_of_class = lru_cache(maxsize=None)(_class_approximate)


def supported_activation(act_fn: object) -> bool:
    """Whether `act_fn` is a GELU this kernel implements (nn.GELU or a listed transformers class)."""
    return isinstance(act_fn, nn.GELU) or _approximate_of_class(type(act_fn)) is not None


def approximate_of(act_fn: nn.Module) -> str:
    """'tanh' or 'none' for a GELU-family activation module; ValueError for anything else. Not the
    cached lookup: torch.compile traces this inside the layers, and Dynamo warns (in the user's
    output) about every lru_cache-wrapped function it traces; eager calls keep their own memo."""
    if isinstance(act_fn, nn.GELU):
        return act_fn.approximate
    approximate = _class_approximate(type(act_fn))
    if approximate is None:
        raise ValueError(
            f"activation {type(act_fn).__name__} is not a GELU this kernel implements; "
            "supported: nn.GELU and transformers' " + ", ".join(sorted(_known_names()))
        )
    return approximate


def _known_names() -> frozenset[str]:
    return _ACTIVATION_NAMES["tanh"] | _ACTIVATION_NAMES["none"]


# --- conditions: which instances of a served class a layer may replace ---

def _condition_check(spec: dict, activation_attribute: str) -> Callable[[nn.Module], bool]:
    kind = spec["kind"]
    if kind == "activation_is_gelu":
        return lambda module: supported_activation(getattr(module, activation_attribute, None))
    if kind == "attribute_not_positive":
        attribute = spec["attribute"]
        return lambda module: not getattr(module, attribute, 0) > 0
    raise ValueError(f"layer_mapping.json: unknown condition kind {kind!r}")


def condition_for(layer_name: str) -> Callable[[nn.Module], bool]:
    """The kernelize condition for `layer_name`: True when an instance may be replaced."""
    spec = _METADATA["layers"][layer_name]
    checks = [_condition_check(c, spec["activation_attribute"]) for c in spec.get("conditions", [])]

    def condition(module: nn.Module) -> bool:
        return all(check(module) for check in checks)

    condition.__name__ = f"{layer_name}_condition"
    return condition


# --- classes served, and tagging them for kernelize ---

def served_classes(layer_name: str | None = None) -> list[tuple[str, str, str]]:
    """(layer name, module path, class name) for every served class, without importing anything."""
    return [
        (name, entry["module"], entry["class"])
        for name, spec in _METADATA["layers"].items()
        if layer_name in (None, name)
        for entry in spec["classes"]
    ]


def _resolve(module_path: str, class_name: str, import_modules: bool) -> type | None:
    module = sys.modules.get(module_path)
    if module is None and import_modules:
        try:
            module = importlib.import_module(module_path)
        except ImportError:
            return None  # a transformers release without this model
    return getattr(module, class_name, None) if module is not None else None


def tag_classes(model: nn.Module | None = None) -> dict[str, list[type]]:
    """Tag the GeGLU classes for kernelize (sets `kernel_layer_name` and a `kernel_condition`).

    With a model, only the classes of its modules are tagged and nothing is imported; without,
    every served class the installed transformers has. Idempotent. A class that already carries
    another layer name is left as it is. Returns {layer name: [classes tagged]}.
    """
    from kernels import replace_kernel_forward_from_hub

    _warn_if_transformers_ignores_kernels()
    if model is not None:
        present = {(type(m).__module__, type(m).__name__): type(m) for m in model.modules()}
        candidates = [(n, present.get((mod, cls))) for n, mod, cls in served_classes()]
    else:
        candidates = [(n, _resolve(mod, cls, import_modules=True)) for n, mod, cls in served_classes()]
    tagged: dict[str, list[type]] = {}
    for layer_name, cls in candidates:
        if cls is None or getattr(cls, "kernel_layer_name", layer_name) != layer_name:
            continue
        replace_kernel_forward_from_hub(cls, layer_name, condition_for(layer_name))
        tagged.setdefault(layer_name, []).append(cls)
    return tagged


def _warn_if_transformers_ignores_kernels() -> None:
    """transformers accepts only a range of kernels versions; outside it (5.23 with kernels
    0.17.2) its decorators are no-ops and from_pretrained(use_kernels=True) replaces nothing,
    silently. Tagging with kernels itself still works; say so once."""
    if "transformers" not in sys.modules or getattr(_warn_if_transformers_ignores_kernels, "done", False):
        return
    try:
        from transformers.utils import import_utils
    except ImportError:
        return
    check = getattr(import_utils, "is_kernels_available", None)
    if check is None or check():
        return
    _warn_if_transformers_ignores_kernels.done = True
    import transformers

    from kernels import __version__ as kernels_version

    low, high = (getattr(import_utils, n, "?") for n in ("KERNELS_MIN_VERSION", "KERNELS_MAX_VERSION"))
    warnings.warn(
        f"geglu: transformers {transformers.__version__} ignores the installed kernels {kernels_version} (it "
        f"accepts kernels >= {low}, < {high}): from_pretrained(..., use_kernels=True) and KernelConfig will "
        "replace nothing. kernels.kernelize with this package's mapping (layer_mapping.register) still works; "
        "or install a matching pair (transformers==5.22.2 with kernels==0.17.2).", RuntimeWarning, stacklevel=3)


def kernel_mapping(
    repo_id: str | None = None,
    *,
    layer_names: Iterable[str] | None = None,
    **repository,
) -> dict:
    """The kernels mapping {layer name: {device: repository}} for our layers.

    Without `repo_id` the repository is this very build (LocalLayerRepository on the folder
    this module was loaded from, whether a build folder, LOCAL_KERNELS or a Hub-cache
    snapshot): no network, and exactly the code already loaded. With `repo_id`, a
    LayerRepository; `repository` holds its other arguments (`version=` or `revision=`,
    `trust_remote_code=`, `user_agent=`) and is passed on as given.
    """
    from kernels import LayerRepository, LocalLayerRepository

    if repo_id is None and repository:
        raise TypeError(
            f"{', '.join(sorted(repository))} only apply with repo_id (a Hub repository); without it the "
            "mapping points at the build this module was loaded from"
        )
    names = list(layer_names) if layer_names is not None else list(_METADATA["layers"])
    mapping = {}
    for name in names:
        if repo_id is None:
            repo = LocalLayerRepository(repo_path=_PACKAGE_DIR, layer_name=name)
        else:
            repo = LayerRepository(repo_id, layer_name=name, **repository)
        mapping[name] = {device: repo for device in _METADATA["layers"][name]["devices"]}
    return mapping


def register(model: nn.Module | None = None, repo_id: str | None = None, **repository) -> dict:
    """Tag the GeGLU classes of `model` (or of transformers) and return the kernels mapping for
    the layers they use. `repo_id` and `repository` (version, revision, trust_remote_code, ...)
    are passed to `kernel_mapping`.

    The model's other kernelizable layers (transformers tags its RMSNorm, rotary embedding and
    activation classes) get an empty entry: kernelize then leaves them to their own forward
    quietly instead of warning that no mapping names them. An empty entry merges with, and never
    replaces, a mapping the caller already registered for such a layer.

    Use the result with `kernels.use_kernel_mapping(...)` or `kernels.register_kernel_mapping(...)`,
    then `kernels.kernelize(model, mode=..., device=...)`.
    """
    tagged = tag_classes(model)
    mapping = kernel_mapping(repo_id, layer_names=tagged, **repository)
    if model is not None:
        for name in other_kernel_layers(model):
            mapping.setdefault(name, {})
    return mapping


def other_kernel_layers(model: nn.Module) -> list[str]:
    """The kernel layer names of `model`'s modules that are not ours (RMSNorm, GeluTanh, ...)."""
    ours = set(_METADATA["layers"]) | set(_METADATA["generic_layers"])
    names = {getattr(type(m), "kernel_layer_name", None) for m in model.modules()}
    # Functions a module attaches for kernelize (transformers' rotary_pos_emb, ...).
    names |= {getattr(type(f), "kernel_layer_name", None)
              for m in model.modules() for f in getattr(m, "_kernel_funcs", {}).values()}
    return sorted(str(n) for n in names - ours - {None})


def summary(model: nn.Module) -> str:
    """One line: which modules of a kernelized `model` run our layers, and which GeGLU-tagged
    modules kept their own forward (a condition excluded them)."""
    replaced: dict[str, int] = {}
    kept: dict[str, int] = {}
    for m in model.modules():
        layer = getattr(type(m), "kernel_layer_name", None)
        if layer not in _METADATA["layers"]:
            continue
        forward = getattr(m.__dict__.get("forward"), "__func__", None)
        target = replaced if forward is not None and forward.__module__.endswith(".layers") else kept
        key = f"{type(m).__name__} -> {layer}" if target is replaced else type(m).__name__
        target[key] = target.get(key, 0) + 1
    parts = ["geglu: " + (", ".join(f"{n} x{c}" for n, c in replaced.items()) or "no module replaced")]
    if kept:
        parts.append("kept their own forward (activation not a GELU, or activation sparsity): "
                     + ", ".join(f"{n} x{c}" for n, c in kept.items()))
    others = other_kernel_layers(model)
    if others:
        parts.append("not GeGLU layers, left alone: " + ", ".join(others))
    return "; ".join(parts)


def markdown_table() -> str:
    """The README's table of served models, generated from the metadata."""
    lines = ["| layer | transformers classes | activation from | left alone when |", "|---|---|---|---|"]
    for name, spec in _METADATA["layers"].items():
        classes = ", ".join(f"`{c['class']}`" for c in spec["classes"])
        unless = "; ".join(
            "activation is not a GELU" if c["kind"] == "activation_is_gelu" else f"`{c['attribute']}` > 0"
            for c in spec.get("conditions", [])
        )
        lines.append(f"| `{name}` | {classes} | `{spec['activation_attribute']}` | {unless} |")
    return "\n".join(lines)
