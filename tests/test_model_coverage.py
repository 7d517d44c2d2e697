"""Every gated-GELU MLP class of the pinned transformers is either served by the layer-mapping
metadata or excluded here with a reason; and every served class, built from a small config,
gives its own forward's results once kernelized (forward and backward, fp32)."""

import copy
import importlib
import inspect
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import HAS_CUDA
from model_scan import gated_gelu_classes

DEVICE = "cuda" if HAS_CUDA else "cpu"

_CONVNEXT = "ConvNeXt-style block: the product is a layer-scale multiply, not a gate"
_NOT_MLP = "not an MLP: a gated step inside a larger block whose product feeds further operations"
_MERGER = "vision patch merger: a projection, LayerNorm and GELU precede its gated MLP in one forward"
_FUSED_SWIGLU = ("SwiGLU by default (silu); fused gate_up_proj read through `activation_fn`: no layer for this "
                 "layout yet")
EXCLUDED = {
    "ConvNextLayer": _CONVNEXT,
    "EdgeTamVideoMemoryFuserCXBlock": _CONVNEXT,
    "Sam2VideoMemoryFuserCXBlock": _CONVNEXT,
    "Sam3TrackerVideoMemoryFuserCXBlock": _CONVNEXT,
    "Qwen3OmniMoeConvNeXtBlock": _CONVNEXT,
    "DiffusionGemmaSelfConditioning": _NOT_MLP,
    "EmbeddingGemma2TextPLEBlock": _NOT_MLP + " (per-layer embeddings)",
    "Gemma4TextDecoderLayer": _NOT_MLP + " (per-layer embeddings)",
    "RecurrentGemmaRecurrentBlock": _NOT_MLP + " (the recurrent block's gate)",
    "EuroBertForSequenceClassification": _NOT_MLP + " (a classification head)",
    "FocalNetModulation": _NOT_MLP + " (focal modulation)",
    "Glm4vVisionPatchMerger": _MERGER,
    "Glm4vMoeVisionPatchMerger": _MERGER,
    "Glm5NextVisionPatchMerger": _MERGER,
    "GlmOcrVisionPatchMerger": _MERGER,
    "GlmImageTextMLP": _FUSED_SWIGLU,
    "Phi4MultimodalMLP": _FUSED_SWIGLU,
    "MoonshineStreamingDecoderMLP": "fc1 output chunked with the activation on the second half's partner and "
                                    "`activation_fn`; silu by default: no layer for this layout yet",
    "Llama4TextMLP": "SwiGLU by default (silu), activation read through `activation_fn`: no layer for it yet",
    "CpmAntDenseGatedACT": "returns the gated product without a down projection (its caller adds dropout and "
                           "w_out): no layer for a bare gate/up pair",
    "Zamba2MLP": "per-block low-rank adapters are added to gate_up_proj's output: not a plain GeGLU",
}


def _transformers_models_dir() -> Path:
    import transformers

    return Path(transformers.__file__).parent / "models"


def _gelu_names(kernel) -> set[str]:
    """Activation names of transformers' ACT2FN whose module the kernel implements."""
    from transformers.activations import ACT2FN

    return {name for name in ACT2FN if kernel.layer_mapping.supported_activation(ACT2FN[name])}


@pytest.fixture(scope="module")
def scanned(kernel):
    return gated_gelu_classes(_transformers_models_dir(), _gelu_names(kernel))


def test_every_gated_gelu_mlp_is_served_or_excluded_with_a_reason(kernel, scanned):
    served = {cls: (layer, mod) for layer, mod, cls in kernel.layer_mapping.served_classes()}
    found = {c.name: c for c in scanned}
    assert len(found) > 40, f"the scan found only {len(found)} classes: the scanner no longer reads transformers"
    missing = sorted(name for name in found if name not in served and name not in EXCLUDED)
    assert not missing, f"gated-GELU MLP classes neither in layer_mapping.json nor excluded: {missing}"
    both = sorted(set(served) & set(EXCLUDED))
    assert not both, f"served and excluded at once: {both}"
    stale = sorted(set(EXCLUDED) - set(found))
    assert not stale, f"excluded classes this transformers no longer has (or no longer gated-GELU): {stale}"
    # The scanner's structural form agrees with the layer a class is served by.
    layer_of_form = {"gate_up_down": "GeGLUMLP", "t5": ("T5DenseGatedGeGLU", "LongT5DenseGatedGeGLU")}
    for name, c in found.items():
        if name in served and c.form in layer_of_form:
            assert served[name][0] in layer_of_form[c.form], (name, served[name][0], c.form)
        if name in served:
            assert served[name][1] == c.module, (name, served[name][1], c.module)


def test_every_served_class_exists_in_transformers(kernel):
    present = {}
    for path in _transformers_models_dir().glob("*/modeling_*.py"):
        present[f"transformers.models.{path.parent.name}.{path.stem}"] = path.read_text(encoding="utf-8")
    absent = [f"{mod}.{cls}" for _, mod, cls in kernel.layer_mapping.served_classes()
              if f"\nclass {cls}(" not in present.get(mod, "")]
    assert not absent, f"layer_mapping.json names classes this transformers lacks: {absent}"


# A config that satisfies every served class's __init__: all of them read a subset of these.
_CONFIG = dict(hidden_size=48, intermediate_size=80, d_model=48, d_ff=80, dim_ff=80, mlp_bias=False,
               add_bias_linear=False, dropout_rate=0.0, mlp_dropout=0.0, dropout=0.0, num_hidden_layers=2,
               num_kv_shared_layers=0, use_double_wide_mlp=False, activation_sparsity_pattern=None,
               use_clipped_linears=False, hidden_dropout_prob=0.0, initializer_range=0.02, num_layers=2)
_ACTIVATION_KEYS = ("hidden_act", "hidden_activation", "dense_act_fn", "activation")
# Per-layer lists where a class indexes its config by layer.
_CONFIG_OVERRIDES = {"Gemma3nTextMLP": dict(intermediate_size=[80, 80], activation_sparsity_pattern=[0.0, 0.0])}


def _build(module_path: str, class_name: str, activation: str):
    from transformers import PretrainedConfig

    cls = getattr(importlib.import_module(module_path), class_name)
    settings = {**_CONFIG, **{k: activation for k in _ACTIVATION_KEYS}, **_CONFIG_OVERRIDES.get(class_name, {})}
    config = PretrainedConfig(**settings)
    # Arguments other than the config (some classes take sizes and the activation directly).
    given = dict(settings, layer_idx=0, output_size=_CONFIG["hidden_size"], config=config)
    kwargs = {name: given[name] for name, p in list(inspect.signature(cls.__init__).parameters.items())[1:]
              if name in given and (p.default is inspect.Parameter.empty or name == "layer_idx")}
    return cls(**kwargs)


def _input_width(module) -> int:
    first = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    return first.in_features


@pytest.mark.parametrize("activation", ["gelu_pytorch_tanh", "gelu"])
def test_every_served_class_kernelized_matches_its_own_forward(kernel, activation):
    """Each class built alone from a small config (random weights): kernelized output and input/
    weight gradients equal the class's own forward in fp32, for tanh and exact GELU."""
    from kernels import Mode, kernelize, use_kernel_mapping

    layers = sys.modules[kernel.__name__ + ".layers"]
    failures, served = [], kernel.layer_mapping.served_classes()
    assert len(served) > 40
    for layer, module_path, class_name in served:
        torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
        try:
            eager = _build(module_path, class_name, activation).to(DEVICE).float()
        except Exception as e:  # noqa: BLE001 - reported below with the class name
            failures.append(f"{class_name}: cannot build from the small config ({type(e).__name__}: {e})")
            continue
        for p in eager.parameters():  # some classes start from zeros or ones: make every weight count
            torch.nn.init.normal_(p, std=0.3)
        model = copy.deepcopy(eager)
        kernel.layer_mapping.tag_classes(model)
        with use_kernel_mapping(kernel.layer_mapping.kernel_mapping(layer_names=[layer]), inherit_mapping=False):
            kernelize(model, mode=Mode.TRAINING, device=DEVICE)
        forward = getattr(model.forward, "__func__", None)
        if forward is None or forward.__module__.rsplit(".", 1)[-1] != "layers":
            failures.append(f"{class_name}: not replaced by {layer} although its activation is {activation}")
            continue
        # kernelize binds the activation module (a kernelizable layer it has no kernel for here) to
        # its own forward: the layer must still compute the GELU itself, not fall back to eager's
        # composition as if the activation were patched.
        act = getattr(model, kernel.layer_mapping._METADATA["layers"][layer]["activation_attribute"])
        if layers._activation(act)[1]:
            failures.append(f"{class_name}: its activation {type(act).__name__} counts as hooked after kernelize")
        x = torch.randn(3, 5, _input_width(eager), device=DEVICE, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        out, ref = model(x), eager(x_ref)
        try:
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
            (out * torch.linspace(-1, 1, out.shape[-1], device=DEVICE)).sum().backward()
            (ref * torch.linspace(-1, 1, ref.shape[-1], device=DEVICE)).sum().backward()
            torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
            for (name, p), q in zip(model.named_parameters(), eager.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
        except AssertionError as e:
            failures.append(f"{class_name} ({layer}): {e}")
    assert not failures, "\n".join(failures)
