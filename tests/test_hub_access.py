"""The hub probe goes where the Hugging Face libraries go: `HF_ENDPOINT` (a mirror), through their HTTP
session and so through `HTTP(S)_PROXY`; the offline variables still fail at once. A loopback server
plays the mirror and the proxy: nothing leaves the machine."""

from __future__ import annotations

import http.server
import threading

import huggingface_hub
import huggingface_hub.constants
import pytest

from actsweep.data import hub


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        Recorder.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy",
                 "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    huggingface_hub.close_session()  # sessions read the proxy variables when they are created
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    huggingface_hub.close_session()


def test_probe_asks_the_hf_endpoint(server, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server)
    assert hub.hub_reachable() is True and Recorder.seen == ["/"]


def test_probe_goes_through_the_proxy(server, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://hub-mirror.invalid")
    monkeypatch.setenv("HTTP_PROXY", server)
    assert hub.hub_reachable() is True
    assert Recorder.seen == ["http://hub-mirror.invalid/"]  # the proxy was asked for the mirror


def test_probe_fails_fast_when_nothing_answers(server, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    assert hub.hub_reachable(timeout=1.0) is False


def test_offline_variables_win_without_a_request(server, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False and Recorder.seen == []
