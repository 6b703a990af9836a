"""Bench-only Celery app: one trivial task, chained 3 times by bench/devhost.py as the Celery+Redis baseline."""
from __future__ import annotations

import os

from celery import Celery


def make_app(redis_url: str) -> Celery:
    """The worker's app and the bench's client app: broker in Redis db 0, results in db 1."""
    celery = Celery("bench_chain", broker=f"{redis_url}/0", backend=f"{redis_url}/1")
    celery.conf.update(broker_connection_retry_on_startup=True, task_serializer="json", result_serializer="json",
                       accept_content=["json"], worker_hijack_root_logger=False, result_expires=600)

    @celery.task(name="bench.step")
    def step(value: int) -> int:
        return value + 1

    return celery


# the worker's (`celery -A bench.celery_chain worker`), pointed at the bench's redis-server by the environment
app = make_app(os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379"))
