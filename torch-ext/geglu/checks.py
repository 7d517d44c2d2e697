"""Input checks for the public functions and layers: a clear ValueError/TypeError that names
the problem (shape, dtype, device, layout) instead of a failure inside Triton or a silently wrong
result. Also the row view every launch works on, which the layout checks share."""

import math

import torch
from torch._subclasses.fake_tensor import is_fake

APPROXIMATIONS = ("tanh", "none")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def row_view(t: torch.Tensor) -> torch.Tensor | None:
    """t as a 2-D [rows, last] view with unit column stride, or None if its layout has none."""
    if t.stride(-1) != 1:
        return None
    try:
        return t.view(math.prod(t.shape[:-1]), t.shape[-1])
    except RuntimeError:
        return None


def check_approximate(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be 'tanh' or 'none' (as in F.gelu), got {approximate!r}")


def check_tensor(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported dtypes are float32, float16 and bfloat16")
    if t.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")


def check_same(names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(f"{names[0]} is on {a.device} but {names[1]} is on {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{names[0]} has dtype {a.dtype} but {names[1]} has dtype {b.dtype}")


def check_gate_up(gate: torch.Tensor, up: torch.Tensor) -> None:
    # Valid inputs pass in one expression (this runs on every call); the checks below name a problem.
    if (isinstance(gate, torch.Tensor) and isinstance(up, torch.Tensor) and gate.dtype in SUPPORTED_DTYPES
            and gate.dtype == up.dtype and gate.shape == up.shape and gate.device == up.device and gate.dim()):
        return
    check_tensor("gate", gate)
    check_tensor("up", up)
    check_same(("gate", "up"), gate, up)
    if gate.shape != up.shape:
        raise ValueError(f"gate and up must have the same shape, got {tuple(gate.shape)} and {tuple(up.shape)}")


def check_packed(x: torch.Tensor, name: str = "x") -> None:
    check_tensor(name, x)
    if x.shape[-1] % 2:
        raise ValueError(
            f"{name} packs gate and up along its last dimension, which must be even; got {tuple(x.shape)}"
        )


def check_out(out: torch.Tensor, x: torch.Tensor) -> None:
    check_tensor("out", out)
    check_same(("out", "x"), out, x)
    expected = (*x.shape[:-1], x.shape[-1] // 2)
    if tuple(out.shape) != expected:
        raise ValueError(f"out must have shape {expected} for x of shape {tuple(x.shape)}, got {tuple(out.shape)}")
    if out.stride(-1) != 1:
        raise ValueError(f"out must have a unit stride in its last dimension, got strides {out.stride()}")
    rows = row_view(out)
    if rows is None:
        raise ValueError(f"out (strides {out.stride()}) cannot be viewed as rows of {expected[-1]} without a copy")
    if rows.shape[0] > 1 and rows.stride(0) < rows.shape[1]:
        raise ValueError(f"out (shape {tuple(out.shape)}, strides {out.stride()}) has elements that share memory "
                         "(an expanded or overlapping view): each output element needs its own memory")
    if out.numel() and x.numel() and _overlap(out, x):
        raise ValueError("out must not overlap x")


def _has_addresses(t: torch.Tensor) -> bool:
    """Whether t's data pointers mean anything: not a meta or fake tensor, not under tracing."""
    if torch.compiler.is_compiling():
        return False
    return not (t.is_meta or type(t) is not torch.Tensor or is_fake(t))


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of a and b intersect (False where addresses are not real:
    meta and fake tensors, tracing; there the compiled graph's functionalization decides)."""
    if not (_has_addresses(a) and _has_addresses(b)):
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        start = t.data_ptr()
        return start, start + t.element_size() * (1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())))

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def check_mlp_decode(x, w_gate, w_up, b_gate, b_up, w_down=None, b_down=None, max_rows: int | None = None) -> None:
    """The fused MLP ops' inputs: x [T, H] with unit column stride (and T <= max_rows, if given),
    weights [I, H] (gate, up) and [H, I] (down) contiguous, biases [I] / [H] or None, one dtype and
    device."""
    check_tensor("x", x)
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be a 2-D [tokens, hidden] tensor with unit column stride, got shape "
                         f"{tuple(x.shape)} and strides {x.stride()}")
    if max_rows is not None:
        torch._check(x.shape[0] <= max_rows, lambda: f"the fused decode MLP takes at most {max_rows} tokens, got "
                     f"{x.shape[0]}: run the projections and geglu() instead")
    hidden = x.shape[1]
    named = [("w_gate", w_gate), ("w_up", w_up)] + ([("w_down", w_down)] if w_down is not None else [])
    for name, w in named:
        check_tensor(name, w)
        check_same(("x", name), x, w)
        if w.dim() != 2 or not w.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 2-D nn.Linear weight, got shape {tuple(w.shape)} and "
                             f"strides {w.stride()}")
    inter = w_gate.shape[0]
    for name, w, shape in (("w_gate", w_gate, (inter, hidden)), ("w_up", w_up, (inter, hidden)),
                           ("w_down", w_down, (hidden, inter))):
        if w is not None and tuple(w.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for x of shape {tuple(x.shape)} and w_gate of shape "
                             f"{tuple(w_gate.shape)}, got {tuple(w.shape)}")
    if (b_gate is None) != (b_up is None):
        raise ValueError("b_gate and b_up must both be given or both be None")
    for name, b, size in (("b_gate", b_gate, inter), ("b_up", b_up, inter), ("b_down", b_down, hidden)):
        if b is not None:
            check_tensor(name, b)
            check_same(("x", name), x, b)
            if tuple(b.shape) != (size,) or not b.is_contiguous():
                raise ValueError(f"{name} must be a contiguous [{size}] bias, got shape {tuple(b.shape)}")
