"""Keeps what the host process has loaded out of the garbage collector's full passes (gc.freeze)."""
from __future__ import annotations

import asyncio
import gc
import logging
import sys

log = logging.getLogger("devhost")


async def freeze_after_imports(interval: float = 1.0) -> None:
    """Freezes what lives after a full collection, at start and again each time new modules have loaded.

    The app loads its heavy SDKs when first used (OpenAI, numpy, pypdf...): with them a full collection walks
    about 170k objects for 100-190 ms, the event loop stopped, every few seconds under load. Frozen objects are
    skipped, and a full pass takes a few ms. Only new modules trigger a freeze, so the request state frozen with
    them (what was alive at those few moments, never collected should it end in a reference cycle) stays small.
    """
    modules = 0
    while True:
        if len(sys.modules) > modules:
            modules = len(sys.modules)
            gc.collect()
            gc.freeze()
            log.debug("%d objects frozen, %d modules loaded", gc.get_freeze_count(), modules)
        await asyncio.sleep(interval)
