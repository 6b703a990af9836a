"""Outbound webhooks: Standard Webhooks signatures, safe target URLs, one delivery attempt."""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from .config import signing_key
from .errors import Unprocessable
from .http_client import session

_LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".lan", ".home.arpa")


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` as the spec has it; other strings are used as raw bytes. Never an empty key: a signature
    anyone can make would be worse than none."""
    key = signing_key(secret)
    if not key:
        raise ValueError("empty or malformed signing secret")
    return key


def message_id_for(*parts: str) -> str:
    """The `webhook-id` of the message that `parts` name (say, a job and its event type): the same for every attempt,
    and without the `.` that the spec forbids in ids (it signs `id.timestamp.body`), which job ids may hold."""
    return "msg_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    payload = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets: list[str], message_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Several secrets (during a rotation) give several space-separated signatures."""
    moment = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": message_id, "webhook-timestamp": str(moment),
            "webhook-signature": " ".join(sign(s, message_id, moment, body) for s in secrets),
            "content-type": "application/json"}


def _allowed(host: str, allowed_hosts: str) -> bool:
    return host.lower() in {h.strip().lower() for h in allowed_hosts.split(",") if h.strip()}


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_private(address: str) -> bool:
    """Not a public unicast address, counting IPv4 addresses carried inside IPv6 ones (mapped, 6to4, NAT64)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        inner = ip.ipv4_mapped or ip.sixtofour or nat64
        if inner is not None and _is_private(str(inner)):
            return True
    return not ip.is_global or ip.is_multicast


def _is_address(host: str) -> bool:
    try:
        _as_address(host)
    except ValueError:
        return False
    return True


def _as_address(host: str) -> str:
    """The address a host names, shorthand IPv4 included (`127.1`, `2130706433`, `0x7f.0.0.1` all resolve to
    127.0.0.1); ValueError for a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if host and all(c in "0123456789abcdefx." for c in host) and not host.endswith("."):
            try:
                return socket.inet_ntoa(socket.inet_aton(host))
            except OSError:
                pass
        raise


MAX_URL_CHARS = 2048  # what browsers and most servers take; callback URLs are far shorter


def validate_target(url: str, allowed_hosts: str = "") -> str:
    """https and a public host; hosts in `allowed_hosts` may be plain http or private (for tests)."""
    if len(url) > MAX_URL_CHARS:
        raise Unprocessable(f"callback_url has {len(url):,} characters; at most {MAX_URL_CHARS:,}.",
                            code="invalid_callback_url")
    try:
        parts = urlsplit(url)
        host = _host_as_sent(url)
        if parts.port == 0 or any(c.isspace() or not c.isprintable() for c in url) or "%" in host:
            raise ValueError("whitespace, control characters, an escaped host or port 0")
        if "[" in parts.netloc:  # [v1.x], [::1]. and the like: no address a request can go to
            ipaddress.IPv6Address(host)
            if not re.fullmatch(r"(:\d+)?", parts.netloc.rsplit("]", 1)[1]):
                raise ValueError("something after the address other than a port")
        elif "" in host.removesuffix(".").split("."):
            raise ValueError("an empty label: .com, a..b")
        if host.endswith(".") and _is_address(host.removesuffix(".")):
            raise ValueError("an address with a trailing dot, which no client sends to")
        host = host.removesuffix(".")  # localhost. is localhost
    except ValueError:
        raise Unprocessable("callback_url is not a valid URL.", code="invalid_callback_url") from None
    if not host or parts.scheme not in ("http", "https") or parts.username or parts.password:
        raise Unprocessable("callback_url must be an absolute https URL without credentials.",
                            code="invalid_callback_url")
    if _allowed(host, allowed_hosts):
        return url
    if parts.scheme != "https":
        raise Unprocessable("callback_url must use https.", code="invalid_callback_url")
    try:
        if _is_private(_as_address(host.strip("[]"))):
            raise Unprocessable("callback_url points to a private or loopback address.",
                                code="callback_url_not_public")
    except ValueError:  # a name, not an address
        if host.endswith(_LOCAL_NAMES) or host == "localhost" or "." not in host:
            raise Unprocessable("callback_url points to a local host name.", code="callback_url_not_public") from None
    return url


def _host_as_sent(url: str) -> str:
    """The host a client connects to, as aiohttp (yarl) encodes it: IDNA maps fullwidth digits and ideographic full
    stops to ASCII (`https://１２７.０.０.１/` goes to 127.0.0.1), so the checks must see that form, not the text."""
    import yarl

    return (yarl.URL(url).raw_host or "").lower()


class PrivateAddress(OSError):
    """The target's name resolves only to private or loopback addresses."""


def _public_only_resolver(allowed_hosts: str) -> Any:
    """A resolver that hands aiohttp only public addresses: the check is made on the addresses connected to,
    so a name that answers public first and private next (DNS rebinding) cannot reach inside."""
    import aiohttp

    class PublicOnly(aiohttp.ThreadedResolver):
        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list:
            found = await super().resolve(host, port, family)
            if _allowed(host, allowed_hosts):
                return found
            public = [address for address in found if not _is_private(address["host"])]
            if not public:
                raise PrivateAddress(f"{host} resolves to a private address")
            return public

    return PublicOnly()


@dataclass
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None
    permanent: bool
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def post_signed(url: str, payload: dict, *, secrets: list[str], message_id: str, timeout: float,
                      allowed_hosts: str = "") -> Attempt:
    """One attempt, redirects not followed. 2xx is delivered; 410 and other 4xx but 408/429 are permanent."""
    import aiohttp

    started = time.perf_counter()
    try:  # again at each attempt: a URL stored before a check was added (or tightened) is not sent to either
        validate_target(url, allowed_hosts)
    except Unprocessable as refused:
        return Attempt(False, None, refused.message, True, (time.perf_counter() - started) * 1000)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    outbound = session(f"webhooks:{allowed_hosts}", lambda: _public_only_resolver(allowed_hosts))
    try:
        async with outbound.post(url, data=body, headers=signed_headers(secrets, message_id, body),
                                 allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            status = response.status
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, PrivateAddress):
            return Attempt(False, None, str(exc.os_error), True, (time.perf_counter() - started) * 1000)
        return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:200], False,
                       (time.perf_counter() - started) * 1000)
    except Exception as exc:  # noqa: BLE001 - a network failure is a failed attempt, retried later
        return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:200], False,
                       (time.perf_counter() - started) * 1000)
    ok = 200 <= status < 300
    permanent = not ok and 400 <= status < 500 and status not in (408, 425, 429)
    return Attempt(ok, status, None if ok else f"HTTP {status}", permanent, (time.perf_counter() - started) * 1000)
