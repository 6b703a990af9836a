"""Where the media of a WAHA message is fetched from: WAHA's own address, whatever host the event names."""
from __future__ import annotations

import asyncio

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
