"""Reads a Bicep file through tree-sitter-bicep into plain Python values, for assertions without the Bicep CLI."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Resource:
    symbol: str
    type: str
    body: dict
    condition: str | None = None


@dataclass
class BicepFile:
    has_syntax_errors: bool
    errors: list[str]
    params: dict[str, dict] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def of_type(self, prefix: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type.split("@")[0] == prefix]


def _text(node) -> str:
    return node.text.decode()


def value(node) -> Any:
    """Objects become dicts, arrays lists, literals Python values; any other expression stays as its source text."""
    kind = node.type
    if kind == "object":
        result = {}
        for prop in node.named_children:
            if prop.type == "object_property":
                key, val = prop.named_children[0], prop.named_children[-1]
                result[_text(key).strip("'")] = value(val)
        return result
    if kind == "array":
        return [value(item) for item in node.named_children if item.type != "comment"]
    if kind == "string" and not any(c.type == "interpolation" for c in node.named_children):
        return _text(node)[1:-1]
    if kind in ("number", "integer"):
        return int(_text(node))
    if kind == "boolean":
        return _text(node) == "true"
    return _text(node)


def parse(path: Path) -> BicepFile:
    import tree_sitter as ts
    import tree_sitter_bicep as tsb

    tree = ts.Parser(ts.Language(tsb.language())).parse(path.read_bytes())
    errors = []

    def collect(node):
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"line {node.start_point[0] + 1}: {_text(node)[:60]!r}")
        for child in node.children:
            collect(child)

    collect(tree.root_node)
    parsed = BicepFile(tree.root_node.has_error, errors)
    decorators: list[str] = []
    for node in tree.root_node.named_children:
        children = node.named_children
        if node.type == "decorators":
            decorators = [_text(d) for d in children]
            continue
        if node.type == "parameter_declaration":
            parsed.params[_text(children[0])] = {"type": _text(children[1]),
                                                 "default": value(children[2]) if len(children) > 2 else None,
                                                 "decorators": decorators}
        elif node.type == "variable_declaration":
            parsed.variables[_text(children[0])] = value(children[-1])
        elif node.type == "resource_declaration":
            body = children[-1]
            condition = None
            if body.type == "if_statement":
                condition = _text(body.named_children[0])
                body = body.named_children[-1]
            parsed.resources[_text(children[0])] = Resource(_text(children[0]), value(children[1]),
                                                            value(body), condition)
        elif node.type == "output_declaration":
            parsed.outputs[_text(children[0])] = _text(children[-1])
        decorators = []
    return parsed
