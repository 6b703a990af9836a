"""Decorators that log one structured event per orchestration end and per activity run."""
from __future__ import annotations

import functools
import inspect
import time
from typing import Any, Callable

import azure.durable_functions as df

from shared.observability import log_event


def _error_code(exc: BaseException) -> str:
    return getattr(exc, "code", None) or type(exc).__name__


def observed_orchestrator(capability: str, done: str | None = None, failed: str | None = None) -> Callable:
    """Logs `job.finished` (status, duration, error code) once, never on replay, and emits the job's events.

    A finished job emits `done` with its result; a failed one emits `failed` (when named) and `job.failed`.
    """
    from .events import emit

    def wrap(orchestrator: Callable) -> Callable:
        @functools.wraps(orchestrator)
        def run(context: df.DurableOrchestrationContext):
            started = context.current_utc_datetime
            job_input = context.get_input()
            request = job_input.get("request") if isinstance(job_input, dict) else None
            metadata = request.get("metadata") if isinstance(request, dict) else None
            about = {"job_id": context.instance_id, "capability": capability, "metadata": metadata or {}}
            try:
                output = yield from orchestrator(context)
            except Exception as exc:
                if not context.is_replaying:
                    log_event("job.finished", job_id=context.instance_id, capability=capability, status="failed",
                              error_code=_error_code(exc), duration_ms=_ms(context, started))
                error = {"code": _error_code(exc), "message": str(exc)[:500]}
                yield from emit(context, "job.failed", context.instance_id, {**about, "error": error})
                raise
            error = output.get("error") if isinstance(output, dict) else None
            if not context.is_replaying:
                log_event("job.finished", job_id=context.instance_id, capability=capability,
                          status="failed" if error else "done", error_code=(error or {}).get("code"),
                          duration_ms=_ms(context, started),
                          usage=output.get("usage") if isinstance(output, dict) else None)
            if error:
                for event_type in filter(None, (failed, "job.failed")):
                    yield from emit(context, event_type, context.instance_id, {**about, "error": error})
            elif done:
                yield from emit(context, done, context.instance_id, {**about, "result": output.get("result")})
            return output

        return run

    return wrap


def _ms(context: df.DurableOrchestrationContext, started: Any) -> int:
    return int((context.current_utc_datetime - started).total_seconds() * 1000)


def observed_activity(capability: str) -> Callable:
    """Logs `activity.finished` with the activity, its job (when the input names one), duration and outcome."""

    def wrap(activity: Callable) -> Callable:
        def record(started: float, outcome: str, argument: Any, error: BaseException | None = None) -> None:
            job_id = argument.get("job_id") if isinstance(argument, dict) else None
            log_event("activity.finished", activity=activity.__name__, capability=capability, job_id=job_id,
                      duration_ms=round((time.perf_counter() - started) * 1000, 1), outcome=outcome,
                      error_code=_error_code(error) if error else None)

        if inspect.iscoroutinefunction(activity):
            @functools.wraps(activity)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                argument = next(iter(kwargs.values()), args[0] if args else None)
                try:
                    result = await activity(*args, **kwargs)
                except Exception as exc:
                    record(started, "failed", argument, exc)
                    raise
                record(started, "succeeded", argument)
                return result

            return run_async

        @functools.wraps(activity)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            argument = next(iter(kwargs.values()), args[0] if args else None)
            try:
                result = activity(*args, **kwargs)
            except Exception as exc:
                record(started, "failed", argument, exc)
                raise
            record(started, "succeeded", argument)
            return result

        return run

    return wrap
