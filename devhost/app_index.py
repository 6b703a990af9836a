"""Discovers the functions of a v2-model app (`func.FunctionApp` / `df.DFApp`) the way the worker indexes them."""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Route:
    """An ASP.NET-style route template (`things/{id}`, `{id?}`, `{id:int}`, `{*rest}`) compiled to a regex."""

    template: str
    pattern: re.Pattern
    names: list[str]

    @classmethod
    def compile(cls, template: str) -> "Route":
        names: list[str] = []
        regex = ""
        for part in template.strip("/").split("/"):
            match = re.fullmatch(r"\{(\*?)(\w+)(?::(\w+))?(\?)?\}", part)
            if not match:
                regex += "/" + re.escape(part)
                continue
            catch_all, name, constraint, optional = match.groups()
            names.append(name)
            body = r".*" if catch_all else (r"-?\d+" if constraint in ("int", "long") else r"[^/]+")
            segment = f"/(?P<{name}>{body})"
            regex += f"(?:{segment})?" if (optional or catch_all) else segment
        return cls(template, re.compile(f"^{regex}/?$", re.IGNORECASE), names)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match("/" + path.strip("/") if path.strip("/") else "")
        if not found:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    @property
    def specificity(self) -> tuple[int, int]:
        """Literal segments win over parameters, as in ASP.NET route ordering."""
        segments = self.template.strip("/").split("/")
        literals = sum(1 for s in segments if not s.startswith("{"))
        return (literals, len(segments))


@dataclass
class FunctionInfo:
    name: str
    trigger_type: str
    trigger: dict
    bindings: list[dict]
    func: Callable[..., Any]
    params: set[str] = field(default_factory=set)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def binding_of(self, kind: str) -> dict | None:
        return next((b for b in self.bindings if b["type"] == kind), None)


@dataclass
class HttpFunction:
    info: FunctionInfo
    route: Route
    methods: set[str] | None
    auth_level: str


@dataclass
class AppIndex:
    """Every function of the app by trigger kind, with Durable names resolved as the extension does."""

    functions: list[FunctionInfo]
    http: list[HttpFunction]
    orchestrators: dict[str, FunctionInfo]
    activities: dict[str, FunctionInfo]
    entities: dict[str, FunctionInfo]
    timers: list[FunctionInfo]

    @classmethod
    def build(cls, app: Any, route_prefix: str = "api") -> "AppIndex":
        functions, http, timers = [], [], []
        orchestrators: dict[str, FunctionInfo] = {}
        activities: dict[str, FunctionInfo] = {}
        entities: dict[str, FunctionInfo] = {}
        # get_functions() keeps the names it has validated and rejects them all as duplicates on a second
        # call (azure-functions 1.26), so clear that memo: several hosts may serve one app in a process.
        if getattr(app, "functions_bindings", None):
            app.functions_bindings = None
        for fn in app.get_functions():
            spec = json.loads(fn.get_function_json())
            bindings = spec["bindings"]
            trigger = next(b for b in bindings if b["type"].lower().endswith("trigger"))
            user = fn.get_user_function()
            info = FunctionInfo(fn.get_function_name(), trigger["type"], trigger, bindings, user,
                                set(inspect.signature(user).parameters))
            functions.append(info)
            kind = trigger["type"]
            if kind == "httpTrigger":
                template = trigger.get("route") or info.name
                full = f"{route_prefix.strip('/')}/{template.strip('/')}" if route_prefix else template
                methods = {m.upper() for m in trigger["methods"]} if trigger.get("methods") else None
                http.append(HttpFunction(info, Route.compile(full), methods,
                                         str(trigger.get("authLevel", "FUNCTION")).upper()))
            elif kind == "orchestrationTrigger":
                for alias in _durable_names(info, trigger.get("orchestration"),
                                            getattr(user, "orchestrator_function", None)):
                    orchestrators[alias] = info
            elif kind == "activityTrigger":
                for alias in _durable_names(info, trigger.get("activity"), user):
                    activities[alias] = info
            elif kind == "entityTrigger":
                for alias in _durable_names(info, trigger.get("entityName"),
                                            getattr(user, "entity_function", None)):
                    entities[alias.lower()] = info
            elif kind == "timerTrigger":
                timers.append(info)
        http.sort(key=lambda h: h.route.specificity, reverse=True)
        return cls(functions, http, orchestrators, activities, entities, timers)

    def find_http(self, path: str) -> list[tuple[HttpFunction, dict[str, str]]]:
        """All HTTP functions whose route matches the path, most specific first."""
        return [(h, params) for h in self.http if (params := h.route.match(path)) is not None]


def _durable_names(info: FunctionInfo, alias: str | None, python_function: Any) -> set[str]:
    """The SDK calls functions by alias, by function name, or by the Python `def` name of a function object."""
    names = {info.name}
    if alias:
        names.add(alias)
    if python_function is not None and getattr(python_function, "__name__", None):
        names.add(python_function.__name__)
    return names
