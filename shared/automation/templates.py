"""Notification templates: Jinja2 in a sandbox, strict about variables, rendered in bounded worker processes."""
from __future__ import annotations

import multiprocessing
import queue
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ServiceUnavailable, Unprocessable


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
RENDER_SECONDS = 2.0  # wall clock for one render (all its parts): past it the worker is killed
MAX_OUTPUT_CHARS = 1_000_000  # per part, counted while rendering
WORKER_MEMORY_BYTES = 1 << 30  # address space of a render worker: a huge value is a MemoryError there
WORKERS = 2  # renders at once; more wait for a free worker
WORKER_WAIT_SECONDS = 3 * RENDER_SECONDS  # for a free worker, before a render is refused as busy
WORKER_START_SECONDS = 20.0  # a worker that cannot start (say, an unguarded __main__) fails the render


@lru_cache(maxsize=2)
def _environment(html: bool) -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Bounded(ImmutableSandboxedEnvironment):
        """The sandbox, with `*` and `**` kept from building huge values (it does not bound them itself). `%` is
        intercepted too: Jinja computes operators over constants while compiling (`'%0300000000d' % 1`), which
        happens in the host when a template is saved, and never does so for intercepted ones."""

        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            if operator == "*":
                sized = [v for v in (left, right) if isinstance(v, (str, list, tuple))]
                counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
                if sized and counts and len(sized[0]) * counts[0] > MAX_REPEAT_CHARS:
                    raise SecurityError("the repeated value would be too large")
            return super().call_binop(context, operator, left, right)

    environment = Bounded(undefined=StrictUndefined, autoescape=html, trim_blocks=True, lstrip_blocks=True)
    # Jinja computes a filter over constants (`'x'|center(10**9)`) while compiling, and a template is compiled in
    # the host when it is saved. It never does so for filters that take the render context: so every filter does.
    environment.filters.update({name: _at_render_time(f) for name, f in environment.filters.items()})
    return environment


def _at_render_time(function: Any) -> Any:
    """The filter, taking the render context (and passing the original what it asked for)."""
    from jinja2 import pass_context

    wants = getattr(getattr(function, "jinja_pass_arg", None), "name", None)

    @pass_context
    def filter_(context: Any, *args: Any, **kwargs: Any) -> Any:
        first = {"context": (context,), "eval_context": (context.eval_ctx,),
                 "environment": (context.environment,)}.get(wants, ())
        return function(*first, *args, **kwargs)

    return filter_


def one_line(text: str) -> str:
    """A subject: whitespace (newlines included) collapsed, as mail headers need."""
    return " ".join(text.split())


def _too_costly(name: str, why: str) -> Unprocessable:
    return Unprocessable(f"{name}: {why}", code="template_too_costly")


def compile_part(source: str, *, html: bool = False, name: str = "template") -> Any:
    """A compiled template; a syntax error is a 422 naming the part and line, and so is too deep a nesting."""
    from jinja2 import TemplateSyntaxError

    try:
        return _environment(html).from_string(source)
    except TemplateSyntaxError as exc:
        raise Unprocessable(f"{name}, line {exc.lineno}: {exc.message}", code="template_syntax_error",
                            details=[{"field": name, "message": exc.message or "syntax error"}]) from None
    except (RecursionError, SyntaxError):  # Python's own limits on nesting, met by the parser or compile()
        raise _too_costly(name, "the template nests too deeply") from None


def _render_part(source: str, data: dict[str, Any], html: bool, name: str) -> str:
    """Runs in a render worker: any failure is a 422, and the output is counted as it is produced."""
    from jinja2 import UndefinedError
    from jinja2.sandbox import SecurityError

    if not source:
        return ""
    chunks, size = [], 0
    try:
        for chunk in compile_part(source, html=html, name=name).generate(**data):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise _too_costly(name, f"the output passes {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    except UndefinedError as exc:
        raise Unprocessable(f"{name}: {exc.message}", code="template_undefined_variable") from None
    except SecurityError as exc:
        raise Unprocessable(f"{name}: {exc}", code="template_unsafe") from None
    except Unprocessable:
        raise
    except MemoryError:
        raise _too_costly(name, f"rendering needs more than {WORKER_MEMORY_BYTES >> 20} MiB of memory") from None
    except RecursionError:
        raise _too_costly(name, "macros, loops or the data nest too deeply") from None
    except Exception as exc:  # noqa: BLE001 - only the template runs here (`truncate(-1)` is an AssertionError)
        raise Unprocessable(f"{name}: {exc}", code="template_render_failed") from None
    return "".join(chunks)


def _render_parts(parts: list[tuple[str, str, bool]], data: dict[str, Any]) -> list[str]:
    return [_render_part(source, data, html, name) for name, source, html in parts]


def _start_worker_process() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    for html in (False, True):  # Jinja imported and set up before the first render's clock starts
        _environment(html)


def _started_worker() -> Any:
    """A one-process pool, spawned (the host runs threads: no fork); killing it stops only its own render."""
    worker = multiprocessing.get_context("spawn").Pool(1, initializer=_start_worker_process)
    try:
        worker.apply_async(int).get(WORKER_START_SECONDS)
    except BaseException:
        worker.terminate()
        raise
    return worker


_idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
for _ in range(WORKERS):
    _idle.put(None)  # a free worker, started when first needed


def _in_worker(parts: list[tuple[str, str, bool]], data: dict[str, Any]) -> list[str]:
    """The parts rendered in a worker process within RENDER_SECONDS; blocks the calling thread (see `in_thread`).
    Waiting for a free worker is bounded too: past WORKER_WAIT_SECONDS the render is refused as busy (503)."""
    try:
        worker = _idle.get(timeout=WORKER_WAIT_SECONDS)
    except queue.Empty:
        raise ServiceUnavailable("Every template worker is busy; try again shortly.", code="templates_busy",
                                 transient=True) from None
    try:
        if worker is None:
            worker = _started_worker()
        names = " / ".join(name for name, source, _ in parts if source)
        try:
            return worker.apply_async(_render_parts, (parts, data)).get(RENDER_SECONDS)
        except multiprocessing.TimeoutError:
            worker.terminate()  # a render stuck in a loop or in one long C call stops only with its process
            worker = None
            raise _too_costly(names, f"rendering took longer than {RENDER_SECONDS:g} s") from None
        except RecursionError:  # pickling the data for the worker: JSON may nest deeper than pickle goes
            raise _too_costly(names, "the data nest too deeply") from None
    finally:
        _idle.put(worker)


def render_string(source: str, data: dict[str, Any], *, html: bool = False, name: str = "template") -> str:
    """Renders in the sandbox, in a worker process: a bad or costly template is a 422, never a 500 or a hang."""
    return _in_worker([(name, source, html)], data)[0] if source else ""


def render(template: TemplateIn, data: dict[str, Any], *, text_name: str = "text") -> Rendered:
    """All parts in one worker call and one time budget; `text_name` is what errors call the text body."""
    subject, text, html = _in_worker([("subject", template.subject, False), (text_name, template.text, False),
                                      ("html", template.html, True)], data)
    return Rendered(subject=one_line(subject), text=text, html=html)


class NamedTemplateIn(TemplateIn):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Lowercase name the notifications use")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    template: TemplateIn | None = Field(None, description="An unsaved template to try (POST /api/templates/preview)")
