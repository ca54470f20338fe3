"""Target-layer expressions (``layer4[-1]``, ``features.denseblock4``) parsed safely and resolved on a model.

Upstream's examples name a target layer by a Python expression on the model,
``model.layer4[-1]``.  The command lines and the model zoo take the same text
without the ``model.`` prefix and resolve it on either framework's model.  The
grammar is deliberately tiny:

    path  := SEG ( "." SEG | "[" ["-"] INT "]" | '["' WORD '"]' )*
    SEG   := NAME | INT | WORD        (WORD: letters, digits, "_")
    paths := path ( "," path )*

* ``NAME`` is a registered sub-layer (torch ``_modules``, Paddle
  ``_sub_layers``) or, failing that, an attribute that holds a layer or a
  list/tuple of layers (Paddle's DenseNet keeps its blocks in plain lists);
* ``[i]`` indexes an indexable container (``Sequential``, ``ModuleList`` /
  ``LayerList``, a list or tuple of layers), negative indices counting from the
  end as in Python;
* ``.i`` (``layer4.2.bn3``, the spelling of ``named_modules()``) is the same as
  ``[i]``, so a path printed by the diagnosis can be pasted back;
* a registered sub-layer whose name is not a Python identifier (Paddle's
  ShuffleNet calls its blocks ``2_1``, ``3_4``...) is written as in
  ``named_sublayers()`` (``2_1._conv_dw``) or as ``["2_1"]``; it is looked up
  by that exact name only;
* a leading ``model.`` is the model itself when the model has no sub-layer
  called ``model``.

The text is parsed with :mod:`ast` and never evaluated: calls, arithmetic,
slices, strings, dunder names and anything else are refused with a one-line
:class:`~paddle_impl.errors.UserError` that quotes the expression.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple, Union

from paddle_impl.errors import UserError

__all__ = [
    "LayerPath",
    "parse_layer_path",
    "parse_layer_paths",
    "resolve_layer",
    "resolve_layers",
    "named_layer_paths",
    "path_of_layer",
]

_MAX_EXPRESSION_CHARS = 500
_WORD = re.compile(r"\w+", re.ASCII)
_PARTS = re.compile(r"\[[^\]]*\]|\.|[^.\[]+")
# The base of a path that starts with a non-identifier name; the user cannot type it
# (dunder names are refused), so it cannot collide with a layer's name.
_ROOT = "__root__"


@dataclass(frozen=True)
class LayerPath:
    """A parsed target-layer expression.

    ``steps`` are ``("attr", name)`` (sub-layer or layer attribute),
    ``("child", name)`` (registered sub-layer by exact name) or
    ``("index", int)``.
    """

    text: str
    steps: Tuple[Tuple[str, Union[str, int]], ...]

    def __str__(self) -> str:
        return format_steps(self.steps)


def format_steps(steps: Sequence[Tuple[str, Union[str, int]]]) -> str:
    """The canonical spelling: attributes joined by dots, indices in brackets."""
    text = ""
    for kind, value in steps:
        if kind == "index":
            text += f"[{value}]"
        elif kind == "child" and not str(value).isidentifier():
            text += f"[{str(value)!r}]" if text else str(value)
        else:
            text += f".{value}" if text else str(value)
    return text


def _refuse(text: str, why: str) -> UserError:
    return UserError(f"bad target-layer expression {text!r}: {why}")


def _index_of(node: ast.AST, text: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    raise _refuse(text, "an index must be an integer such as [0] or [-1]")


def _steps_of(node: ast.AST, text: str, rooted: bool) -> List[Tuple[str, Union[str, int]]]:
    if isinstance(node, ast.Name):
        if rooted and node.id == _ROOT:
            return []
        return [("attr", _checked_name(node.id, text))]
    if isinstance(node, ast.Attribute):
        return _steps_of(node.value, text, rooted) + [("attr", _checked_name(node.attr, text))]
    if isinstance(node, ast.Subscript):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if not _WORD.fullmatch(key.value) or key.value.startswith("__"):
                raise _refuse(text, f"[{key.value!r}] is not a sub-layer name")
            return _steps_of(node.value, text, rooted) + [("child", key.value)]
        return _steps_of(node.value, text, rooted) + [("index", _index_of(key, text))]
    raise _refuse(text, f"only attribute names and integer indices are allowed, not {type(node).__name__}")


def _python_spelling(text: str) -> Tuple[str, bool]:
    """Rewrite ``named_modules`` spellings into Python syntax for :func:`ast.parse`.

    ``layer4.2.bn3`` -> ``layer4[2].bn3`` and ``2_1._conv_dw`` ->
    ``__root__["2_1"]._conv_dw``; brackets and anything unusual are left for
    the parser to accept or refuse.  Returns the text and whether the
    synthetic root was added.
    """
    parts = _PARTS.findall(text)
    if "".join(parts) != text:
        return text, False
    out: List[str] = []
    rooted = False
    for i, part in enumerate(parts):
        if part == "." or part.startswith("[") or part.isidentifier():
            out.append(part)
            continue
        dotted = bool(out) and out[-1] == "."
        if _WORD.fullmatch(part) and (dotted or not out):
            if dotted:
                out.pop()
            if part.isdigit():
                out.append(f"[{part}]" if out else part)
            else:
                if not out:
                    out.append(_ROOT)
                    rooted = True
                out.append(f'["{part}"]')
            continue
        out.append(part)
    return "".join(out), rooted


def _checked_name(name: str, text: str) -> str:
    # Dunder names reach interpreter internals (__class__, __globals__); no layer is called that.
    if name.startswith("__"):
        raise _refuse(text, f"the name {name!r} is not a layer name")
    return name


def parse_layer_path(text: str) -> LayerPath:
    """Parse one expression such as ``layer4[-1]`` or ``blocks[2].norm1`` (never evaluated)."""
    if not isinstance(text, str):
        raise UserError(f"a target-layer expression must be text, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise _refuse(text, "it is empty")
    if len(stripped) > _MAX_EXPRESSION_CHARS:
        raise _refuse(text[:60] + "...", f"it is longer than {_MAX_EXPRESSION_CHARS} characters")
    python_text, rooted = _python_spelling(stripped)
    try:
        tree = ast.parse(python_text, mode="eval")
    except SyntaxError:
        raise _refuse(text, "it is not of the form name[.name|[int]]...") from None
    steps = _steps_of(tree.body, text, rooted)
    if not steps:
        raise _refuse(text, "it names no layer")
    return LayerPath(text=stripped, steps=tuple(steps))


def parse_layer_paths(text: str) -> List[LayerPath]:
    """Parse the list form ``"layer4[-1],layer4[-2]"`` (one or more expressions, comma-separated)."""
    if not isinstance(text, str):
        raise UserError(f"target-layer expressions must be text, not {type(text).__name__}")
    parts = text.split(",")
    if any(not part.strip() for part in parts):
        raise _refuse(text, "an entry of the comma-separated list is empty")
    return [parse_layer_path(part) for part in parts]


# -- resolving on a model -------------------------------------------------------------


def _framework(model: Any) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(model, paddle.nn.Layer):
        return "paddle"
    raise UserError(f"cannot resolve a target layer on a {type(model).__name__}: not a torch Module or Paddle Layer")


def _children(layer: Any, framework: str) -> dict:
    table = layer._modules if framework == "torch" else layer._sub_layers
    return {name: child for name, child in table.items() if child is not None}


def _is_layer(value: Any, framework: str) -> bool:
    if framework == "torch":
        return isinstance(value, sys.modules["torch"].nn.Module)
    return isinstance(value, sys.modules["paddle"].nn.Layer)


def _indexable(value: Any, framework: str) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    if framework == "torch":
        nn = sys.modules["torch"].nn
        return isinstance(value, (nn.Sequential, nn.ModuleList))
    nn = sys.modules["paddle"].nn
    return isinstance(value, (nn.Sequential, nn.LayerList))


def _describe(value: Any) -> str:
    return type(value).__name__


def _walk(model: Any, path: LayerPath, framework: str) -> Any:
    current = model
    steps = list(path.steps)
    if steps and steps[0] == ("attr", "model") and "model" not in _children(model, framework):
        steps = steps[1:]
    done: List[Tuple[str, Union[str, int]]] = []
    for kind, value in steps:
        where = format_steps(done) or "the model"
        if kind == "child":
            children = _children(current, framework) if _is_layer(current, framework) else {}
            if value not in children:
                raise _refuse(path.text, f"{where} ({_describe(current)}) has no sub-layer named {value!r}")
            current = children[value]
        elif kind == "attr":
            if not _is_layer(current, framework):
                raise _refuse(path.text, f"{where} is a {_describe(current)}, which has no sub-layers")
            children = _children(current, framework)
            if value in children:
                current = children[value]
            else:
                attribute = getattr(current, value, None)
                is_layer_list = isinstance(attribute, (list, tuple)) and attribute and all(
                    _is_layer(item, framework) for item in attribute
                )
                if not (_is_layer(attribute, framework) or is_layer_list):
                    known = ", ".join(list(children)[:8]) or "none"
                    raise _refuse(
                        path.text, f"{where} ({_describe(current)}) has no sub-layer {value!r} (it has: {known})"
                    )
                current = attribute
        else:
            if not _indexable(current, framework):
                raise _refuse(path.text, f"{where} is a {_describe(current)}, which cannot be indexed")
            items = list(current) if isinstance(current, (list, tuple)) else list(_children(current, framework).values())
            if not -len(items) <= value < len(items):
                raise _refuse(path.text, f"index {value} is out of range for {where} ({len(items)} entries)")
            current = items[value]
        done.append((kind, value))
    if not _is_layer(current, framework):
        raise _refuse(path.text, f"it names a {_describe(current)}, not a layer")
    return current


def resolve_layer(model: Any, expression: Union[str, LayerPath]) -> Any:
    """The sub-layer of ``model`` (torch ``nn.Module`` or Paddle ``nn.Layer``) that ``expression`` names."""
    path = expression if isinstance(expression, LayerPath) else parse_layer_path(expression)
    return _walk(model, path, _framework(model))


def resolve_layers(model: Any, expressions: Union[str, Sequence[Union[str, LayerPath]]]) -> List[Any]:
    """Resolve the list form (``"layer4[-1],layer4[-2]"`` or a sequence of expressions), in order."""
    paths = parse_layer_paths(expressions) if isinstance(expressions, str) else list(expressions)
    return [resolve_layer(model, path) for path in paths]


def named_layer_paths(model: Any) -> List[Tuple[str, Any]]:
    """``(path, layer)`` for every sub-layer, paths in ``named_modules`` spelling (``layer4.2.bn3``)."""
    framework = _framework(model)
    named = model.named_modules() if framework == "torch" else model.named_sublayers(include_self=True)
    return [(name, layer) for name, layer in named]


def path_of_layer(model: Any, layer: Any) -> str:
    """The ``named_modules`` path of ``layer`` inside ``model`` ("" for the model itself)."""
    for name, candidate in named_layer_paths(model):
        if candidate is layer:
            return name
    raise UserError(f"the {type(layer).__name__} is not a sub-layer of this {type(model).__name__}")
