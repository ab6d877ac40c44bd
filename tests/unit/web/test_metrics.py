"""``/metrics``: Prometheus text format, content, and the optional bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.web.seed import make_context, seed
from web import create_app, metrics, ui


def _client(tmp_path: Path, fake_redis: Any, token: str = "") -> Any:
    extra = {"CONNECTOR_METRICS_TOKEN": token} if token else {}
    context = make_context(f"sqlite:///{tmp_path / 'm.db'}", fake_redis, extra=extra)
    seed(context)
    app = create_app({"CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None})
    ui.register(app)
    return app.test_client(), context


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_are_valid_prometheus_text(tmp_path: Path, fake_redis: Any):
    client, _ = _client(tmp_path, fake_redis)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# HELP connector_queue_depth " in text
    assert "# TYPE connector_sync_duration_seconds summary" in text
    samples = _samples(text)
    assert (
        samples[("connector_webhook_events", frozenset({("source", "zoho"), ("status", "done")}))]
        == 1
    )
    assert (
        samples[
            ("connector_sync_records", frozenset({("trigger", "webhook"), ("outcome", "failed")}))
        ]
        == 1
    )
    assert samples[("connector_sync_duration_seconds_count", frozenset({("outcome", "ok")}))] == 3
    assert (
        samples[
            ("connector_pipedrive_budget_remaining", frozenset({("connection", "pipedrive-acme")}))
        ]
        == 180000 - 12000
    )
    assert (
        samples[
            (
                "connector_connection_needs_reauth",
                frozenset({("connection", "zoho-in"), ("system", "zoho")}),
            )
        ]
        == 1
    )
    assert samples[("connector_queue_depth", frozenset({("queue", "sync")}))] == 0
    lag = samples[
        ("connector_sync_lag_seconds", frozenset({("connection", "zoho-eu"), ("system", "zoho")}))
    ]
    assert 290 < lag < 3600


def test_queue_depth_counts_broker_lists(tmp_path: Path, fake_redis: Any):
    client, _ = _client(tmp_path, fake_redis)
    fake_redis.rpush("webhooks", "a", "b")
    fake_redis.rpush("webhooks\x06\x163", "c")
    samples = _samples(client.get("/metrics").text)
    assert samples[("connector_queue_depth", frozenset({("queue", "webhooks")}))] == 3


def test_unreachable_redis_is_reported_not_fatal(tmp_path: Path, fake_redis: Any):
    client, context = _client(tmp_path, fake_redis)
    context._redis = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    assert samples[("connector_scrape_error", frozenset({("part", "queues")}))] == 1
    assert ("connector_review_items_open", frozenset()) in samples


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Bearer wrong", 401), ("Basic c2VjcmV0", 401), ("Bearer s3cret-token", 200)],
)
def test_bearer_token(tmp_path: Path, fake_redis: Any, header: str | None, status: int):
    client, _ = _client(tmp_path, fake_redis, token="s3cret-token")
    headers = {"Authorization": header} if header else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_render_escapes_labels_and_help():
    family = metrics.Family("x_total", "help with \\ and\nnewline", "counter")
    family.add(1.5, connection='a"b\\c\nd')
    text = metrics.render([family])
    assert text == (
        "# HELP x_total help with \\\\ and\\nnewline\n"
        "# TYPE x_total counter\n"
        'x_total{connection="a\\"b\\\\c\\nd"} 1.5\n'
    )
    parsed = list(text_string_to_metric_families(text))
    assert parsed[0].samples[0].labels == {"connection": 'a"b\\c\nd'}
