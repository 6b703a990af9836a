"""HTTP triggers of the sample app, served by devhost: routing, request data, responses and auth levels."""
from __future__ import annotations

import pytest
from helpers import FUNCTION_KEY, MASTER_KEY, Http


def _assert_json_error(status: int, headers: dict, body, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/json")
    assert body["error"]["message"]


def test_route_params_include_int_constraint_and_optional_rest(http):
    status, _, body = http.request("GET", "/api/echo/42/extra")
    assert status == 200
    assert body["route"] == {"id": "42", "rest": "extra"}

    status, _, body = http.request("GET", "/api/echo/-7")
    assert status == 200
    assert body["route"] == {"id": "-7"}  # the optional segment is simply absent


def test_int_constraint_rejects_a_non_numeric_segment(http):
    status, headers, body = http.request("GET", "/api/echo/abc")
    _assert_json_error(status, headers, body, 404)


def test_get_and_post_are_served_with_method_query_and_headers(http):
    status, _, body = http.request("GET", "/api/echo/1?a=1&b=two%20words", headers={"x-test": "hello"})
    assert status == 200
    assert body["method"] == "GET"
    assert body["query"] == {"a": "1", "b": "two words"}
    assert body["header"] == "hello"

    status, _, body = http.request("POST", "/api/echo/1", {"x": 1})
    assert status == 200
    assert body["method"] == "POST"
    assert body["body_len"] == len(b'{"x": 1}')


def test_wrong_method_returns_405_json_with_allowed_methods(http):
    status, headers, body = http.request("PUT", "/api/echo/1")
    _assert_json_error(status, headers, body, 405)
    assert headers["Allow"] == "GET, POST"


@pytest.mark.parametrize("path", ["/api/no/such/route", "/api/no%0Asuch", "/api/%0D%0A"])
def test_unknown_route_returns_404_json(http, path):
    status, headers, body = http.request("GET", path)
    _assert_json_error(status, headers, body, 404)


def test_text_body_reaches_the_function_and_text_response_keeps_charset(http):
    text = "héllo wörld ✓"
    status, headers, body = http.request("POST", "/api/text", raw=text.encode("utf-8"),
                                         headers={"content-type": "text/plain; charset=utf-8"})
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode("utf-8") == text.upper()


def test_binary_body_round_trips_byte_for_byte(http):
    payload = bytes(range(256)) * 64
    status, headers, body = http.request("POST", "/api/binary", raw=payload,
                                         headers={"content-type": "application/octet-stream"})
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == payload[::-1]


def test_a_body_over_the_host_limit_is_a_413_json_error():
    import sample_app
    from devhost.host import DevHost, HostConfig, HostThread
    from devhost.store import MemoryStore

    config = HostConfig(port=0, function_key=FUNCTION_KEY, master_key=MASTER_KEY, max_body=4096)
    with HostThread(DevHost(sample_app.app, MemoryStore(), config)) as running:
        status, headers, body = Http(running.base_url).request(
            "POST", "/api/binary", raw=b"x" * 5000, headers={"content-type": "application/octet-stream"})
    _assert_json_error(status, headers, body, 413)
    assert body["error"]["code"] == "payload_too_large"


def test_multipart_form_exposes_fields_and_uploaded_file(http):
    boundary = "devhost-test-boundary"
    raw = (f"--{boundary}\r\n"
           'Content-Disposition: form-data; name="user"\r\n\r\n'
           "alice\r\n"
           f"--{boundary}\r\n"
           'Content-Disposition: form-data; name="upload"; filename="notes.txt"\r\n'
           "Content-Type: text/plain\r\n\r\n"
           "file contents\nline two\r\n"
           f"--{boundary}--\r\n").encode()
    status, _, body = http.request("POST", "/api/echo/3", raw=raw,
                                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200
    assert body["form"] == {"user": "alice"}
    assert body["files"] == {"upload": "file contents\nline two"}
    assert body["body_len"] == len(raw)


def test_http_function_with_durable_client_binding_starts_an_orchestration(http, wait_done):
    status, _, body = http.request("POST", "/api/start/chain?id=from-http", 2)
    assert (status, body) == (202, {"id": "from-http"})
    done = wait_done("from-http")
    assert (done["name"], done["output"]) == ("chain", 2)


def test_unhandled_exception_in_function_returns_500_json(http):
    status, headers, body = http.request("GET", "/api/boom")
    _assert_json_error(status, headers, body, 500)
    assert "unhandled" not in body["error"]["message"]  # the exception text stays in the host log


# ---------------------------------------------------------------- auth levels


def test_anonymous_function_needs_no_key(host):
    status, _, body = Http(host.base_url, key=None).request("GET", "/api/echo/1")
    assert status == 200
    assert body["route"] == {"id": "1"}


@pytest.mark.parametrize("key", [FUNCTION_KEY, MASTER_KEY])
def test_function_level_accepts_function_or_master_key_as_header(host, key):
    status, _, body = Http(host.base_url, key=key).request("GET", "/api/secured")
    assert (status, body) == (200, b"secret")


def test_function_level_accepts_key_as_code_query_parameter(host):
    status, _, body = Http(host.base_url, key=None).request("GET", f"/api/secured?code={FUNCTION_KEY}")
    assert (status, body) == (200, b"secret")


@pytest.mark.parametrize("header_key, query", [(None, ""), ("wrong-key", ""), (None, "?code=wrong-key"),
                                                ("", "?code=")])
def test_function_level_rejects_missing_or_wrong_key_with_401_json(host, header_key, query):
    status, headers, body = Http(host.base_url, key=header_key).request("GET", f"/api/secured{query}")
    _assert_json_error(status, headers, body, 401)


def test_admin_level_needs_the_master_key(host):
    assert Http(host.base_url, key=MASTER_KEY).request("GET", "/api/admin-only")[::2] == (200, b"admin")
    no_key = Http(host.base_url, key=None)
    assert no_key.request("GET", f"/api/admin-only?code={MASTER_KEY}")[::2] == (200, b"admin")
    for key in (FUNCTION_KEY, None):
        status, headers, body = Http(host.base_url, key=key).request("GET", "/api/admin-only")
        _assert_json_error(status, headers, body, 401)
