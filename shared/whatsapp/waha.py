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


MEDIA_SECONDS = 300.0  # a media download may take this long in all, as long as bytes keep coming
MAX_MEDIA_BYTES = 64 * 1024 * 1024  # a turn reads 5 pages of a PDF or a voice note: larger files are not read


class Waha:
    def __init__(self, base_url: str, api_key: str, timeout: float = 15.0,
                 max_media_bytes: int = MAX_MEDIA_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_media_bytes = max_media_bytes

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
        # `timeout` bounds each wait (connecting, the next bytes), not the whole of a large file on a slow link
        timeout = aiohttp.ClientTimeout(total=max(MEDIA_SECONDS, self.timeout), sock_connect=self.timeout,
                                        sock_read=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status == 404:
                        raise DeliveryError("WAHA no longer has this media file.", code="waha_media_gone")
                    if response.status >= 400:
                        raise DeliveryError(f"WAHA answered {response.status} for the media.",
                                            code="waha_unavailable", transient=response.status >= 500)
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(1 << 16):
                        data += chunk
                        if len(data) > self.max_media_bytes:
                            raise DeliveryError(f"The media file is larger than {self.max_media_bytes:,} bytes.",
                                                code="waha_media_too_large")
                    return bytes(data)
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
