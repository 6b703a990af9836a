"""Turns the `AzureWebJobsStorage` setting into something the Azure Storage SDKs accept."""
from __future__ import annotations

import os

# Table inserts answer 204 with the ETag instead of echoing the entity: nothing to send back and parse.
NO_ECHO = "return-no-content"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

# The Azurite account is public and fixed; the SDKs do not expand the `UseDevelopmentStorage=true` shorthand.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(host: str = "127.0.0.1", blob_port: int = 10000, queue_port: int = 10001,
                              table_port: int = 10002) -> str:
    base = f"http://{host}:{{}}/{_AZURITE_ACCOUNT}"
    return (f"DefaultEndpointsProtocol=http;AccountName={_AZURITE_ACCOUNT};AccountKey={_AZURITE_KEY};"
            f"BlobEndpoint={base.format(blob_port)};QueueEndpoint={base.format(queue_port)};"
            f"TableEndpoint={base.format(table_port)};")


def expand_connection_string(value: str) -> str:
    """`UseDevelopmentStorage=true` becomes the full Azurite string; anything else passes unchanged."""
    parts = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return azurite_connection_string()
    return value


def client_options() -> dict:
    """Options for every Storage client: proxy settings from the environment only when a proxy is set.

    With them on, aiohttp looks for proxies and reads ~/.netrc on every request: a sixth of the CPU of a
    busy host, spent on finding nothing.
    """
    return {"use_env_settings": any(os.environ.get(name) for name in _PROXY_VARIABLES)}
