"""Notification templates: Jinja2 in a sandbox, strict about undefined variables, text and HTML bodies."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import Unprocessable


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field("", max_length=500, description="Jinja2; e-mail subject")
    text: str = Field("", max_length=50_000, description="Jinja2; the plain-text body (SMS and WhatsApp use it)")
    html: str = Field("", max_length=200_000, description="Jinja2, autoescaped; the HTML body of e-mails")
    description: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _has_body(self) -> "TemplateIn":
        if not (self.text.strip() or self.html.strip()):
            raise ValueError("a template needs a text or an html body")
        for part in ("subject", "text", "html"):
            compile_part(getattr(self, part), html=part == "html", name=part)
        return self


class Rendered(BaseModel):
    subject: str = ""
    text: str = ""
    html: str = ""


MAX_REPEAT_CHARS = 100_000  # `'a' * n` and `x ** n` may not build values larger than this
MAX_EXPONENT = 64


@lru_cache(maxsize=2)
def _environment(html: bool) -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Bounded(ImmutableSandboxedEnvironment):
        """The sandbox, with `*` and `**` kept from building huge values (it does not bound them itself)."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            if operator == "*":
                sized = [v for v in (left, right) if isinstance(v, (str, list, tuple))]
                counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
                if sized and counts and len(sized[0]) * counts[0] > MAX_REPEAT_CHARS:
                    raise SecurityError("the repeated value would be too large")
            return super().call_binop(context, operator, left, right)

    return Bounded(undefined=StrictUndefined, autoescape=html, trim_blocks=True, lstrip_blocks=True)


def one_line(text: str) -> str:
    """A subject: whitespace (newlines included) collapsed, as mail headers need."""
    return " ".join(text.split())


def compile_part(source: str, *, html: bool = False, name: str = "template") -> Any:
    """A compiled template; a syntax error is a 422 naming the part and line."""
    from jinja2 import TemplateSyntaxError

    try:
        return _environment(html).from_string(source)
    except TemplateSyntaxError as exc:
        raise Unprocessable(f"{name}, line {exc.lineno}: {exc.message}", code="template_syntax_error",
                            details=[{"field": name, "message": exc.message or "syntax error"}]) from None


def render_string(source: str, data: dict[str, Any], *, html: bool = False, name: str = "template") -> str:
    """Renders in the sandbox: an undefined variable or a reach for Python internals is a 422, never a 500."""
    from jinja2 import TemplateError, UndefinedError
    from jinja2.sandbox import SecurityError

    if not source:
        return ""
    try:
        return compile_part(source, html=html, name=name).render(**data)
    except UndefinedError as exc:
        raise Unprocessable(f"{name}: {exc.message}", code="template_undefined_variable") from None
    except SecurityError as exc:
        raise Unprocessable(f"{name}: {exc}", code="template_unsafe") from None
    except Unprocessable:
        raise
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise Unprocessable(f"{name}: {exc}", code="template_render_failed") from None


def render(template: TemplateIn, data: dict[str, Any]) -> Rendered:
    return Rendered(subject=one_line(render_string(template.subject, data, name="subject")),
                    text=render_string(template.text, data, name="text"),
                    html=render_string(template.html, data, html=True, name="html"))


class NamedTemplateIn(TemplateIn):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Lowercase name the notifications use")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    template: TemplateIn | None = Field(None, description="An unsaved template to try (POST /api/templates/preview)")
