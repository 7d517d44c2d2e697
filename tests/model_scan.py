"""Finds the gated-GELU MLP classes of the installed transformers by reading its source (no
imports of model code): a class whose forward multiplies an activation of one projection by
another projection, where the activation is a GELU by default (a constant GELU, or a
configuration default of the same model folder that names one)."""

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class GatedClass:
    module: str  # dotted module path
    name: str
    activation_attribute: str
    defaults: frozenset  # activation names the configs default to
    form: str  # "gate_up_down" (GemmaMLP's forward), "t5" (wi_0/wi_1/wo), or "other"


def _self_attr(node) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


@lru_cache(maxsize=None)
def _config_defaults(folder: Path, class_name: str | None) -> dict[str, frozenset]:
    """{attribute: default strings} of the folder's configuration classes (only `class_name`
    when given). T5-style configs derive the activation from feed_forward_proj: a folder whose
    configs mention "gated-gelu" counts as defaulting `dense_act_fn` to gelu_new."""
    out: dict[str, set] = {}
    for path in folder.glob("configuration_*.py"):
        text = path.read_text(encoding="utf-8")
        if "gated-gelu" in text:
            out.setdefault("dense_act_fn", set()).add("gelu_new")
        tree = ast.parse(text)
        classes = [c for c in tree.body if isinstance(c, ast.ClassDef) and class_name in (None, c.name)]
        for node in (n for c in classes for n in ast.walk(c)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                out.setdefault(node.target.id, set()).add(node.value.value)
            if isinstance(node, ast.arguments):
                positional = node.args[len(node.args) - len(node.defaults):]
                for arg, default in [*zip(positional, node.defaults), *zip(node.kwonlyargs, node.kw_defaults)]:
                    if isinstance(default, ast.Constant) and isinstance(default.value, str):
                        out.setdefault(arg.arg, set()).add(default.value)
    return {k: frozenset(v) for k, v in out.items()}


def _activation_names(source: str, defaults: dict) -> set[str]:
    m = re.search(r"ACT2FN\[\s*(?:self\.)?(?:config\.)?(\w+)\s*\]", source)
    if m and not source.lstrip().startswith("ACT2FN[\"") and m.group(1) in defaults:
        return set(defaults[m.group(1)])
    m = re.search(r"ACT2FN\[\s*['\"](\w+)['\"]\s*\]", source)
    if m:
        return {m.group(1)}
    return {"gelu"} if "nn.GELU" in source else set()


def _form(fns: dict, linears: set, act: str) -> str:
    body = [s for s in fns["forward"].body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    text = " ".join(ast.unparse(s) for s in body)
    x = fns["forward"].args.args[1].arg if len(fns["forward"].args.args) > 1 else "x"
    if {"gate_proj", "up_proj", "down_proj"} <= linears and act == "act_fn" and re.fullmatch(
            rf"(?:down_proj = )?(?:return )?self\.down_proj\(self\.act_fn\(self\.gate_proj\({x}\)\) \* "
            rf"self\.up_proj\({x}\)\)(?: return down_proj)?", text):
        return "gate_up_down"
    if {"wi_0", "wi_1", "wo"} <= linears and act == "act":
        return "t5"
    return "other"


def gated_gelu_classes(models_dir: Path, gelu_names: set[str]) -> list[GatedClass]:
    found = []
    for path in sorted(models_dir.glob("*/modeling_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = f"transformers.models.{path.parent.name}.{path.stem}"
        for cls in (c for c in tree.body if isinstance(c, ast.ClassDef)):
            fns = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
            if "forward" not in fns or "__init__" not in fns:
                continue
            linears, acts = set(), {}
            for node in ast.walk(fns["__init__"]):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and _self_attr(node.targets[0]):
                    name, value = _self_attr(node.targets[0]), node.value
                    source = ast.unparse(value)
                    if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("Linear"):
                        linears.add(name)
                    elif "ACT2FN" in source or "GELU" in source:
                        acts[name] = source
            if not linears or not acts:
                continue
            flow: dict[str, set] = {}  # local name -> self attributes called to compute it

            def uses(node):
                got = set()
                for n in ast.walk(node):
                    if isinstance(n, ast.Call) and _self_attr(n.func):
                        got.add(_self_attr(n.func))
                    if isinstance(n, ast.Name) and n.id in flow:
                        got |= flow[n.id]
                return got

            for node in ast.walk(fns["forward"]):
                if isinstance(node, ast.Assign):
                    used = uses(node.value)
                    for name in (n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)):
                        flow[name] = flow.get(name, set()) | used
            gate_acts = set()
            for node in ast.walk(fns["forward"]):
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                    left, right = uses(node.left), uses(node.right)
                    for a, b in ((left, right), (right, left)):
                        if a & set(acts) and (b & linears or (a & linears and isinstance(node.right, ast.Name))):
                            gate_acts |= a & set(acts)
            if not gate_acts:
                continue
            act = sorted(gate_acts)[0]
            annotation = next((ast.unparse(a.annotation) for a in fns["__init__"].args.args
                               if a.arg == "config" and a.annotation), None)
            config_class = annotation.split("|")[0].strip().strip("'\"") if annotation else None
            defaults = _config_defaults(path.parent, config_class)
            names = _activation_names(acts[act], defaults) or _activation_names(acts[act], _config_defaults(path.parent, None))
            if names & gelu_names:
                found.append(GatedClass(module, cls.name, act, frozenset(names), _form(fns, linears, act)))
    return found
