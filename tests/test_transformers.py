"""Load-time substitution into transformers models, for every GeGLU family (tiny models from
configs, offline). The kernel's own layer_mapping does the tagging and builds the mapping."""

import copy
import inspect
import os
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import CONFIG, HAS_CUDA, REPO_ID, ROOT
from tiny_models import FAMILIES

DEVICE = "cuda" if HAS_CUDA else "cpu"


def _served(kernel):
    return {(mod, cls): name for name, mod, cls in kernel.layer_mapping.served_classes()}


def _geglu_modules(kernel, model):
    served = _served(kernel)
    return [m for m in model.modules() if (type(m).__module__, type(m).__name__) in served]


def _excluded(kernel, module) -> bool:
    name = _served(kernel)[(type(module).__module__, type(module).__name__)]
    return not kernel.layer_mapping.condition_for(name)(module)


def _kernelize(kernel, model, mode):
    from kernels import kernelize, use_kernel_mapping

    mapping = kernel.layer_mapping.register(model)
    with use_kernel_mapping(mapping, inherit_mapping=False):
        return kernelize(model, mode=mode, device=DEVICE)


def _replaced(model):
    return [m for m in model.modules() if "forward" in m.__dict__ and
            getattr(m.forward, "__func__", None) is not None and
            m.forward.__func__.__module__.endswith(".layers")]


def _loss(out_getter, model, inputs):
    out = out_getter(model(**inputs)).float()
    return out, (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_kernelized_matches_eager(kernel, family):
    """Every GeGLU MLP (less those a condition excludes) is replaced; logits and the gradients
    of a training step match the eager model in fp32, and no step warns where eager did not."""
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES[family]
    torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
    eager = build().to(DEVICE).float()
    model = copy.deepcopy(eager)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    mlps = _geglu_modules(kernel, model)
    expected = [m for m in mlps if not _excluded(kernel, m)]
    assert expected, f"{family}: no GeGLU module found"

    # Kernelizing adds no warning to eager's (eager runs first: a warning given once per process
    # then counts as eager's).
    eager.eval(), model.eval()
    with warnings.catch_warnings(record=True) as eagers, torch.no_grad():
        warnings.simplefilter("always")
        want = out_getter(eager(**inputs))
    with warnings.catch_warnings(record=True) as ours, torch.no_grad():
        warnings.simplefilter("always")
        _kernelize(kernel, model, Mode.INFERENCE)
        got = out_getter(model(**inputs))
    assert {(w.category, str(w.message)) for w in ours} <= {(w.category, str(w.message)) for w in eagers}
    assert set(map(id, _replaced(model))) == set(map(id, expected))
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)

    # A training step, dropout active: the layers call the module's own dropout at the same
    # point as the original forward, so the same seed gives the same masks.
    seed = int.from_bytes(os.urandom(4), "little")
    eager.train(), model.train()
    with warnings.catch_warnings(record=True) as eagers:
        warnings.simplefilter("always")
        torch.manual_seed(seed)
        _, loss_ref = _loss(out_getter, eager, inputs)
        loss_ref.backward()
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        _kernelize(kernel, model, Mode.TRAINING)
        torch.manual_seed(seed)
        _, loss = _loss(out_getter, model, inputs)
        loss.backward()
    assert {(w.category, str(w.message)) for w in ours} <= {(w.category, str(w.message)) for w in eagers}
    # Relative to each gradient's norm: fp32 reassociation deep in a model moves single elements
    # of large gradients by ~1e-3 relative while the whole tensor agrees to ~1e-6. A random tiny
    # model occasionally overflows in eager itself (gemma3n, about 1 seed in 80): NaNs must then
    # sit where eager's are, and the finite rest must agree.
    for (name, p), p_ref in zip(model.named_parameters(), eager.parameters()):
        if p_ref.grad is not None:
            assert torch.equal(p.grad.isnan(), p_ref.grad.isnan()), f"{family}: NaNs in grad of {name} differ from eager"
            finite = p_ref.grad.isfinite()
            got, ref = p.grad[finite], p_ref.grad[finite]
            rel = ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item()
            assert rel < 1e-4, f"{family}: grad of {name} differs from eager by {rel:.2e} (relative norm)"


@pytest.mark.parametrize("family", ["gemma", "gemma2", "t5_v1_1", "modernbert"])
def test_kernelized_models_take_the_fast_paths(kernel, monkeypatch, family):
    """kernelize sets every kernelizable layer it has no kernel for to its class's own forward,
    bound on the instance (transformers' activation modules are such layers): that is no patch, and
    the layers must not fall back to eager's composition for it. They did, in every kernelized
    model, while the same module called by hand took the fused paths: inference runs the fused
    kernels, training (where no dropout is active) the GeGLU + down node, and both match eager."""
    from kernels import Mode

    mlp_ops = sys.modules[kernel.__name__ + ".mlp_ops"]
    monkeypatch.setattr(mlp_ops, "FUSED_OPT_IN", True)  # GEGLU_FUSED_MLP=1: a table for any device
    monkeypatch.setattr(sys.modules[kernel.__name__ + ".kernel_src.mlp"], "warm_up_shape", lambda *args: None)
    fused, trained = [], []
    for name, log in (("run_mlp_decode", fused), ("gate_up_geglu_impl", fused), ("_mlp_training", trained)):
        original = getattr(mlp_ops, name)
        monkeypatch.setattr(mlp_ops, name, lambda *a, _f=original, _log=log, **k: _log.append(_f(*a, **k)) or _log[-1])
    build, make_inputs, out_getter = FAMILIES[family]
    torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
    eager = build().to(DEVICE, torch.bfloat16).eval()
    model = copy.deepcopy(eager)
    _kernelize(kernel, model, Mode.INFERENCE)
    replaced = _replaced(model)
    assert replaced
    for m in replaced:
        act = next(c for c in m.children() if c not in (getattr(m, n, None) for n in ("dropout", "drop")) and
                   not isinstance(c, torch.nn.Linear))
        assert "forward" in act.__dict__ and mlp_ops.untouched(act, backward=True), type(act)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    with torch.no_grad():
        ours, ref = out_getter(model(**inputs)).float(), out_getter(eager(**inputs)).float()
    assert len(fused) >= len(replaced), f"{family}: {len(fused)} fused calls for {len(replaced)} layers"
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
    if family in ("gemma", "gemma2"):  # no dropout in their MLPs: the training node applies
        _kernelize(kernel, model, Mode.TRAINING)
        model.train()
        model.float()(**{k: v for k, v in inputs.items()})
        assert sum(y is not None for y in trained) >= len(replaced), f"{family}: the training node was not taken"


def test_bf16_gemma_within_tolerance(kernel):
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES["gemma"]
    eager = build().to(DEVICE, torch.bfloat16).eval()
    model = copy.deepcopy(eager)
    _kernelize(kernel, model, Mode.INFERENCE)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    with torch.no_grad():
        ours, ref = out_getter(model(**inputs)).float(), out_getter(eager(**inputs)).float()
    # bf16 logits: the kernel matches eager's rounding points; the interpreter truncates.
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=2e-2)


def test_dropout_is_active_only_in_training(kernel):
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES["t5_v1_1"]
    model = build().to(DEVICE)
    _kernelize(kernel, model, Mode.TRAINING)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    model.train()
    a, b = out_getter(model(**inputs)), out_getter(model(**inputs))
    assert not torch.equal(a, b), "dropout should make two training passes differ"
    _kernelize(kernel, model, Mode.INFERENCE)
    model.eval()
    with torch.no_grad():
        assert torch.equal(out_getter(model(**inputs)), out_getter(model(**inputs)))


@pytest.mark.parametrize("family", ["modernbert", "pixtral", "udop_exact"])
def test_exact_erf_models_use_the_exact_variant(kernel, family):
    """fp32, scaled-up activations: the tanh variant would miss eager by far more than fp32 noise."""
    if family == "udop_exact":
        build, make_inputs, out_getter = FAMILIES["t5_v1_1"]
        eager = build()
        for m in eager.modules():
            if hasattr(m, "act") and type(m.act).__name__ == "NewGELUActivation":
                from transformers.activations import GELUActivation
                m.act = GELUActivation()
    else:
        build, make_inputs, out_getter = FAMILIES[family]
        eager = build()
    eager = eager.to(DEVICE).eval()
    mlps = _geglu_modules(kernel, eager)
    from transformers.activations import GELUActivation
    assert all(isinstance(getattr(m, kernel.layer_mapping.load_layer_mapping()["layers"][_served(kernel)[
        (type(m).__module__, type(m).__name__)]]["activation_attribute"]), GELUActivation) for m in mlps)
    module = mlps[0]
    # Inputs scaled so that the gate pre-activations spread over [-6, 6], where erf and tanh
    # differ by up to 4.7e-4.
    x = torch.randn(5, 3, _in_features(module), device=DEVICE)
    with torch.no_grad():
        first = next(p for p in module.parameters() if p.dim() == 2)
        x = x * (3.0 / (x @ first.t()).std())
    layer = getattr(kernel.layers, _served(kernel)[(type(module).__module__, type(module).__name__)])
    attr = kernel.layer_mapping.load_layer_mapping()["layers"][layer.__name__]["activation_attribute"]
    with torch.no_grad():
        ref = module(x)
        ours_error = (layer.forward(module, x) - ref).abs().max()
        original = getattr(module, attr)
        setattr(module, attr, torch.nn.GELU(approximate="tanh"))  # what a tanh-only kernel would compute
        tanh_error = (layer.forward(module, x) - ref).abs().max()
        setattr(module, attr, original)
    assert ours_error < 1e-5 * ref.abs().max() + 1e-6, ours_error
    assert tanh_error > 20 * ours_error, (tanh_error, ours_error)


def _in_features(module):
    for name in ("gate_proj", "wi_0", "Wi", "proj"):
        if hasattr(module, name):
            return getattr(module, name).in_features
    raise AssertionError(type(module))


def test_metadata_matches_transformers_and_the_validator(kernel):
    """Every listed class exists in the pinned transformers, its forward signature matches the
    layer's (the kernels validator), and the attributes the layer relies on exist."""
    from kernels.layer.layer import _validate_layer

    meta = kernel.layer_mapping.load_layer_mapping()
    import importlib

    for name, module_path, class_name in kernel.layer_mapping.served_classes():
        cls = getattr(importlib.import_module(module_path), class_name)
        layer = getattr(kernel.layers, name)
        _validate_layer(check_cls=cls, cls=layer, repo=f"geglu:{name}")
        init_src = inspect.getsource(cls.__init__)
        for attr, what in meta["layers"][name]["attributes"].items():
            optional = what.startswith("optional")
            assert optional or f"self.{attr} =" in init_src, f"{class_name} has no attribute {attr}"
    # The activation classes named in the metadata exist in transformers.activations.
    import transformers.activations as acts
    for approximate in ("tanh", "none"):
        for cls_name in meta["activations"][approximate]:
            assert hasattr(acts, cls_name), cls_name


def test_readme_table_matches_metadata(kernel):
    readme = (ROOT / "README.md").read_text()
    for name, _, class_name in kernel.layer_mapping.served_classes():
        assert f"`{class_name}`" in readme and f"`{name}`" in readme, (name, class_name)
    table = kernel.layer_mapping.markdown_table()
    assert table in readme, "README's model table is out of date: paste layer_mapping.markdown_table()"


def test_tagging_is_idempotent_and_leaves_untagged_code_alone(kernel):
    from transformers.models.gemma.modeling_gemma import GemmaMLP, GemmaRMSNorm

    first = kernel.layer_mapping.tag_classes()
    second = kernel.layer_mapping.tag_classes()
    assert {k: [c.__name__ for c in v] for k, v in first.items()} == {k: [c.__name__ for c in v] for k, v in second.items()}
    assert GemmaMLP.kernel_layer_name == "GeGLUMLP"
    assert getattr(GemmaRMSNorm, "kernel_layer_name", None) != "GeGLUMLP"
    # Without kernelize, a tagged class still runs its own forward.
    build, make_inputs, out_getter = FAMILIES["gemma"]
    model = build()
    assert all("forward" not in m.__dict__ for m in _geglu_modules(kernel, model))


def test_train_eval_rekernelize_with_the_right_mode(kernel):
    """transformers' model.train()/eval() re-kernelize; the GeGLU modules stay ours in both."""
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES["gemma2"]
    model = build().to(DEVICE)
    _kernelize(kernel, model, Mode.INFERENCE)
    n = len(_replaced(model))
    mapping = kernel.layer_mapping.register(model)
    from kernels import use_kernel_mapping
    with use_kernel_mapping(mapping, inherit_mapping=False):
        model.train()
        assert len(_replaced(model)) == n
        model.eval()
        assert len(_replaced(model)) == n


def test_transformers_use_kernels_path(kernel, build_dir, tmp_path):
    """The load-time path: tag, then from_pretrained(use_kernels=True). KernelConfig refuses CPU,
    so on CPU the equivalent registered mapping is used; with CUDA the KernelConfig itself."""
    from transformers import AutoModelForCausalLM

    build, make_inputs, out_getter = FAMILIES["gemma"]
    torch.manual_seed(0)
    saved = tmp_path / "tiny-gemma"
    build().save_pretrained(saved)
    eager = AutoModelForCausalLM.from_pretrained(saved).to(DEVICE).eval()

    kernel.layer_mapping.tag_classes()  # line 1 of the two a user adds
    if HAS_CUDA:
        from transformers import KernelConfig
        os.environ["LOCAL_KERNELS"] = f"{REPO_ID}={build_dir}"
        # With LOCAL_KERNELS a repository resolves offline by revision (a version lists Hub branches).
        config = KernelConfig({"GeGLUMLP": (f"{REPO_ID}:GeGLUMLP", {"revision": f"v{CONFIG.version}"})}, inherit_mapping=False)
        model = AutoModelForCausalLM.from_pretrained(saved, use_kernels=True, kernel_config=config, device_map="cuda")
    else:
        from kernels import register_kernel_mapping
        register_kernel_mapping(kernel.layer_mapping.kernel_mapping(layer_names=["GeGLUMLP"]))
        model = AutoModelForCausalLM.from_pretrained(saved, use_kernels=True)
    model.eval()
    assert len(_replaced(model)) == model.config.num_hidden_layers
    # The activation modules, which from_pretrained's kernelize binds to their own forward, still
    # count as untouched: the layers' fast paths stay open (they were closed in every such model).
    mlp_ops = sys.modules[kernel.__name__ + ".mlp_ops"]
    assert all(mlp_ops.untouched(m.act_fn, backward=True) for m in _replaced(model))
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    with torch.no_grad():
        torch.testing.assert_close(out_getter(model(**inputs)), out_getter(eager(**inputs)), rtol=1e-4, atol=1e-4)


def test_disable_kernel_mapping_leaves_every_module_alone(build_dir):
    code = f"""
import os, sys, torch
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
from kernels import get_local_kernel, kernelize, use_kernel_mapping, Mode
from tiny_models import FAMILIES
k = get_local_kernel(Path({str(build_dir)!r}))
model = FAMILIES["gemma"][0]()
with use_kernel_mapping(k.layer_mapping.register(model), inherit_mapping=False):
    kernelize(model, mode=Mode.INFERENCE, device="cpu")
mods = [m for m in model.modules() if "forward" in m.__dict__ and m.forward.__func__.__module__.endswith(".layers")]
print("REPLACED", len(mods))
"""
    env = {**os.environ, "DISABLE_KERNEL_MAPPING": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "REPLACED 0" in out.stdout, out.stdout + out.stderr


def test_mapping_passes_repository_arguments_and_finds_a_symlinked_build(kernel, build_dir, tmp_path):
    """register()/kernel_mapping() hand every LayerRepository argument on (trust_remote_code
    included), refuse them without a repo_id, and, for a build whose files are symlinks (the
    Hub cache's snapshots/<commit>/ -> blobs/), point at the snapshot folder, not blobs/."""
    mapping = kernel.layer_mapping.kernel_mapping(REPO_ID, version=CONFIG.version, trust_remote_code=True,
                                                  layer_names=["GeGLUMLP"])
    repo = mapping["GeGLUMLP"]["cuda"]
    assert type(repo).__name__ == "LayerRepository" and repo.layer_name == "GeGLUMLP"
    with pytest.raises(TypeError, match="trust_remote_code only apply with repo_id"):
        kernel.layer_mapping.kernel_mapping(trust_remote_code=True)

    # A Hub-cache-shaped copy: every file of the variant a symlink into a flat blobs/ folder.
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / ("0" * 40) / "build"
    blobs.mkdir()
    variant = next(build_dir.glob("torch-cpu"))
    for i, path in enumerate(sorted(p for p in variant.rglob("*") if p.is_file())):
        (blobs / str(i)).write_bytes(path.read_bytes())
        link = snapshot / variant.name / path.relative_to(variant)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blobs / str(i))
    code = f"""
import sys
from pathlib import Path
from kernels import Mode, get_local_kernel, kernelize, use_kernel_mapping
sys.path.insert(0, {str(ROOT / 'tests')!r})
from tiny_models import FAMILIES
k = get_local_kernel(Path({str(snapshot / variant.name)!r}))
model = FAMILIES["gemma"][0]()
with use_kernel_mapping(k.layer_mapping.register(model), inherit_mapping=False):
    kernelize(model, mode=Mode.INFERENCE, device="cpu")
print(k.layer_mapping.summary(model))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "GeGLUMLP x2" in out.stdout, out.stdout + out.stderr[-3000:]


@pytest.mark.parametrize("family", ["gemma", "t5_v1_1", "modernbert"])
def test_kernelized_model_under_torch_func_matches_eager(kernel, family):
    """Functional training as torch.func users write it (grad of a functional_call over the
    parameters, and per-sample gradients by vmap of that grad): the kernelized model answers as
    the untouched one, for the separate (Gemma, T5) and packed (ModernBERT) layouts."""
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES[family]
    torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
    eager = build().to(DEVICE).float().eval()
    eager.set_attn_implementation("eager")  # vmap of CUDA's fused attention refuses T5's bias (both models)
    model = copy.deepcopy(eager)
    _kernelize(kernel, model, Mode.TRAINING)
    model.eval()
    assert _replaced(model)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss_of(m):
        def loss(p, batch):
            out = out_getter(torch.func.functional_call(m, p, (), batch)).float()
            return (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum()
        return loss

    grads, grads_ref = (torch.func.grad(loss_of(m))(params, inputs) for m in (model, eager))
    per_sample, per_sample_ref = (
        torch.func.vmap(torch.func.grad(loss_of(m)), in_dims=(None, 0))(
            params, {k: v.unsqueeze(1) for k, v in inputs.items()})
        for m in (model, eager))
    for name in params:
        for got, ref in ((grads[name], grads_ref[name]), (per_sample[name], per_sample_ref[name])):
            rel = ((got - ref).norm() / ref.norm().clamp_min(1e-12)).item()
            assert rel < 1e-4, f"{family}: torch.func gradient of {name} differs from eager by {rel:.2e}"


@pytest.mark.parametrize("family", ["gemma", "t5_v1_1", "modernbert"])
def test_kernelized_model_under_forward_mode_ad_matches_eager(kernel, family):
    """A Jacobian-vector product through the kernelized model (a dual input embedding, in eval):
    the tangent of its output equals the untouched model's (no fast path may drop it)."""
    import torch.autograd.forward_ad as fwAD
    from kernels import Mode

    build, make_inputs, out_getter = FAMILIES[family]
    torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
    eager = build().to(DEVICE).float().eval()
    eager.set_attn_implementation("eager")  # aten's fused attention kernels have no forward-mode AD
    model = copy.deepcopy(eager)
    _kernelize(kernel, model, Mode.INFERENCE)
    assert _replaced(model)
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(model).items()}
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    tangent = torch.randn_like(embeds)
    outs = []
    with torch.no_grad(), fwAD.dual_level():
        for m in (model, eager):
            out = out_getter(m(inputs_embeds=fwAD.make_dual(embeds, tangent), **inputs))
            primal, jvp = fwAD.unpack_dual(out)
            assert jvp is not None, f"{family}: the tangent was dropped"
            outs.append((primal.clone(), jvp.clone()))
    (primal, jvp), (primal_ref, jvp_ref) = outs
    torch.testing.assert_close(primal, primal_ref, rtol=1e-4, atol=1e-4)
    rel = ((jvp - jvp_ref).norm() / jvp_ref.norm()).item()
    assert rel < 1e-4, f"{family}: the kernelized model's tangent differs from eager's by {rel:.2e}"


@pytest.mark.parametrize("family", ["gemma", "t5_v1_1", "modernbert"])
def test_peft_lora_on_the_projections_is_honoured(kernel, family):
    """LoRA adapters (peft) on a kernelized model's MLP projections, the way fine-tuners add them
    after loading with kernels: the layers see wrapped projections and call them as modules, so
    the adapters' contribution is in the output and the adapters get the untouched model's
    gradients (the same adapters on the same weights); the frozen base weights get none."""
    from kernels import Mode

    peft = pytest.importorskip("peft", reason="peft is not installed here (CI installs it: requirements-dev.txt)")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model
    build, make_inputs, out_getter = FAMILIES[family]
    torch.manual_seed(int.from_bytes(os.urandom(2), "little"))
    eager = build().to(DEVICE).float()
    model = copy.deepcopy(eager)
    _kernelize(kernel, model, Mode.TRAINING)
    targets = sorted({name.rsplit(".", 1)[-1] for m in _geglu_modules(kernel, model)
                      for name, sub in m.named_modules() if isinstance(sub, torch.nn.Linear) and name})
    assert targets, f"{family}: no projection to adapt"
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=False)
    peft_model, peft_eager = get_peft_model(model, config), get_peft_model(eager, copy.deepcopy(config))
    assert _replaced(peft_model), f"{family}: adding the adapters removed the package's layers"
    peft_eager.load_state_dict(peft_model.state_dict())  # the same (non-zero) adapters on both
    inputs = {k: v.to(DEVICE) for k, v in make_inputs(eager).items()}
    peft_model.train(), peft_eager.train()
    torch.manual_seed(0)
    out, loss = _loss(out_getter, peft_model, inputs)
    torch.manual_seed(0)
    out_ref, loss_ref = _loss(out_getter, peft_eager, inputs)
    with torch.no_grad(), peft_eager.disable_adapter():
        torch.manual_seed(0)
        without_adapters = out_getter(peft_eager(**inputs)).float()
    assert (out_ref - without_adapters).abs().max() > 1e-3, "the adapters change nothing: the test cannot fail"
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    loss.backward(), loss_ref.backward()
    adapted = 0
    for (name, p), p_ref in zip(peft_model.named_parameters(), peft_eager.parameters()):
        if "lora_" in name:
            adapted += 1
            rel = ((p.grad - p_ref.grad).norm() / p_ref.grad.norm().clamp_min(1e-12)).item()
            assert rel < 1e-4, f"{family}: grad of {name} differs from eager by {rel:.2e}"
        else:
            assert p.grad is None and p_ref.grad is None, f"{family}: frozen {name} got a gradient"
    assert adapted >= 2 * len(targets)
