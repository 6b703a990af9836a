"""Where the media of a WAHA message is fetched from: WAHA's own address, whatever host the event names."""
from __future__ import annotations

import asyncio
import time

import pytest

from shared.errors import DeliveryError
from shared.whatsapp.waha import Waha, media_request_url

BASE = "http://127.0.0.1:3000"


@pytest.mark.parametrize("media_url,expected", [
    ("http://waha.example.com:3000/api/files/default/false_1@c.us_A.oga", f"{BASE}/api/files/default/false_1@c.us_A.oga"),
    ("https://public.example/api/files/x.pdf?download=1", f"{BASE}/api/files/x.pdf?download=1"),
    ("/api/files/x.jpeg", f"{BASE}/api/files/x.jpeg"),
    ("http://w//other.example/x", f"{BASE}//other.example/x"),  # a path: still asked of WAHA
])
def test_the_path_of_the_media_url_is_asked_of_waha(media_url, expected):
    assert media_request_url(BASE + "/", media_url) == expected


@pytest.mark.parametrize("media_url", ["@127.0.0.1:9/api/files/x.png", "http:@127.0.0.1:9/api/files/x.png",
                                       "api/files/x.png", ":9@evil/x"])
def test_a_media_url_that_would_name_another_host_is_refused(media_url):
    with pytest.raises(DeliveryError) as refused:
        media_request_url(BASE, media_url)
    assert refused.value.code == "waha_media_url_invalid" and not refused.value.transient


def test_download_sends_nothing_anywhere_for_such_a_url():
    import socket

    with socket.socket() as other:  # would receive the request, API key included, if the URL were joined as text
        other.bind(("127.0.0.1", 0))
        other.listen()
        other.settimeout(0.5)
        port = other.getsockname()[1]
        with pytest.raises(DeliveryError):
            asyncio.run(Waha(BASE, "secret-key", timeout=2).download(f"@127.0.0.1:{port}/api/files/x.png"))
        with pytest.raises(socket.timeout):
            other.accept()


class _Dribble:
    """A loopback HTTP server that sends `size` bytes in `pieces`, `gap` seconds apart."""

    def __init__(self, size: int, pieces: int, gap: float) -> None:
        import http.server
        import threading

        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                piece = size // pieces
                for n in range(pieces):
                    time.sleep(gap)
                    self.wfile.write(b"x" * (piece if n < pieces - 1 else size - piece * (pieces - 1)))
                    self.wfile.flush()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        served.size = size

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_large_media_file_on_a_slow_link_downloads_while_bytes_keep_coming():
    server = _Dribble(300_000, pieces=6, gap=0.25)  # 1.5 s in all, never 0.6 s without bytes
    try:
        data = asyncio.run(Waha(server.url, "", timeout=0.6).download("/api/files/voice.oga"))
    finally:
        server.close()
    assert len(data) == 300_000


def test_a_media_file_larger_than_the_bound_is_refused_for_good():
    server = _Dribble(200_000, pieces=2, gap=0.0)
    try:
        with pytest.raises(DeliveryError) as refused:
            asyncio.run(Waha(server.url, "", timeout=5, max_media_bytes=100_000).download("/api/files/big.pdf"))
    finally:
        server.close()
    assert refused.value.code == "waha_media_too_large" and not refused.value.transient
