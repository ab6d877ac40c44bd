"""The request core: a 5xx to a write is an uncertain write, never blindly repeated."""

from __future__ import annotations

import pytest
import requests
import responses

from connector.errors import ServerError, UncertainWriteError
from connector.http import BaseClient, RetryPolicy


class _Client(BaseClient):
    system = "test"

    def classify(self, response: requests.Response) -> object:
        if response.status_code >= 500:
            raise ServerError("boom", system=self.system, status=response.status_code)
        return response.json()


@responses.activate
def test_server_error_on_a_post_is_uncertain_and_not_retried():
    call = responses.post("https://api.example/things", status=502, json={})
    client = _Client(retry=RetryPolicy(max_retries=3, base_delay=0), sleep=lambda _: None)
    with pytest.raises(UncertainWriteError):
        client.request("POST", "https://api.example/things", json={"a": 1})
    assert call.call_count == 1


@responses.activate
def test_server_error_on_a_get_is_retried():
    call = responses.get("https://api.example/things", status=503, json={})
    client = _Client(retry=RetryPolicy(max_retries=2, base_delay=0), sleep=lambda _: None)
    with pytest.raises(ServerError):
        client.request("GET", "https://api.example/things")
    assert call.call_count == 3


@responses.activate
def test_server_error_on_a_repeatable_write_is_retried():
    call = responses.patch("https://api.example/things/1", status=500, json={})
    client = _Client(retry=RetryPolicy(max_retries=1, base_delay=0), sleep=lambda _: None)
    with pytest.raises(ServerError):
        client.request("PATCH", "https://api.example/things/1", json={}, retry_writes=True)
    assert call.call_count == 2
