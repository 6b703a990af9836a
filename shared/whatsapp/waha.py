"""The WAHA HTTP API for replies: seen, typing, send text; its errors mapped to retry or give up."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import DeliveryError
from ..http_client import session


def media_request_url(base_url: str, media_url: str) -> str:
    """Where to fetch a message's media: WAHA at `base_url`, with the path and query of `media_url` (WAHA names its
    own public host there). A path that does not start with `/` (`@other:80/x`) would put another host after
    `base_url` and send it our API key: refused."""
    import yarl

    parts = urlsplit(media_url)
    url = base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    if not parts.path.startswith("/") or yarl.URL(url).origin() != yarl.URL(base_url).origin():
        raise DeliveryError("The media URL of the message is not a path on WAHA.", code="waha_media_url_invalid")
    return url


class Waha:
    def __init__(self, base_url: str, api_key: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        import aiohttp

        headers = {"X-Api-Key": self.api_key} if self.api_key else {}
        try:
            async with session().post(f"{self.base_url}{path}", json=body, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                status = response.status
                text = await response.text()
        except Exception as exc:  # noqa: BLE001 - WAHA unreachable: try again later
            raise DeliveryError(f"WAHA is not reachable ({type(exc).__name__}).", code="waha_unreachable",
                                transient=True) from None
        if 200 <= status < 300:
            return text
        # 422: the session is not WORKING yet (starting, QR scan); 5xx: WAHA failed. Both pass with time.
        if status == 422 or status >= 500 or status == 429:
            raise DeliveryError(f"WAHA answered {status}.", code="waha_unavailable", transient=True)
        raise DeliveryError(f"WAHA refused the request ({status}).", code="waha_rejected")

    async def download(self, media_url: str) -> bytes:
        """Media of a message, fetched at once: WAHA deletes its files after a few minutes.

        Only the path of `media_url` is used: WAHA puts its own public host there, which need not be
        the address we reach it at.
        """
        import aiohttp

        url = media_request_url(self.base_url, media_url)
        headers = {"X-Api-Key": self.api_key} if self.api_key else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status == 404:
                        raise DeliveryError("WAHA no longer has this media file.", code="waha_media_gone")
                    if response.status >= 400:
                        raise DeliveryError(f"WAHA answered {response.status} for the media.",
                                            code="waha_unavailable", transient=response.status >= 500)
                    return await response.read()
        except DeliveryError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DeliveryError(f"WAHA is not reachable ({type(exc).__name__}).", code="waha_unreachable",
                                transient=True) from None

    async def send_seen(self, session: str, chat_id: str, message_ids: list[str]) -> None:
        await self._post("/api/sendSeen", {"session": session, "chatId": chat_id, "messageIds": message_ids})

    async def typing(self, session: str, chat_id: str, on: bool) -> None:
        await self._post("/api/startTyping" if on else "/api/stopTyping", {"session": session, "chatId": chat_id})

    async def send_text(self, body: dict[str, Any]) -> None:
        await self._post("/api/sendText", body)
