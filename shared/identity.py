"""The app's managed identity as an aio credential: one per event loop and identity, its tokens cached in it."""
from __future__ import annotations

import asyncio
import weakref
from typing import Any

# aio credentials must not cross event loops; a loop's own go with it
_credentials: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def app_credential(client_id: str = "") -> Any:
    """`DefaultAzureCredential` for the user-assigned identity `client_id` (empty: the default one)."""
    mine = _credentials.setdefault(asyncio.get_running_loop(), {})
    if client_id not in mine:
        from azure.identity.aio import DefaultAzureCredential

        mine[client_id] = DefaultAzureCredential(managed_identity_client_id=client_id or None)
    return mine[client_id]
