"""The official OpenAPI specs for tests, read from ``CONNECTOR_SPECS_DIR`` (default
``../shared/reference/specs/``) with the exceptions of :mod:`connector.sandbox.spec_exceptions`.

The specs are never copied into this repository (see the reference README). A missing spec fails
the test with a clear message instead of skipping it. The known defects are patched in one place,
``connector/sandbox/spec_exceptions.py``, for the strict simulators and these tests alike.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any

import pytest

from connector.sandbox.spec_check import (
    SPEC_REQUEST_KEY,
    SpecsMissingError,
    default_specs_dir,
    load_spec_dict,
)

SPECS_DIR = default_specs_dir()
_ID = re.compile(r"/\d+(?=/|$)")
ZOHO_SPEC_NAMES = ("contacts", "contact-persons", "invoices", "customer-payments", "organizations")


def spec_dict(name: str, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Spec ``name`` (``pipedrive/v2``, ``zoho-books/contacts``...) as a dict, exceptions applied
    (but those whose summary is in ``skip``); fails the test when the file is absent."""
    try:
        return load_spec_dict(name, SPECS_DIR, skip=skip)
    except SpecsMissingError as error:
        pytest.fail(f"{error}: the shared reference specs must be present")


@functools.lru_cache(maxsize=16)
def _openapi(name: str) -> Any:
    from openapi_core import OpenAPI

    # The full openapi-core validator (security included), unlike the simulators' check.
    return OpenAPI.from_dict(spec_dict(name))


def pipedrive_spec(version: str) -> Any:
    """The Pipedrive ``v1`` or ``v2`` spec as an ``openapi_core.OpenAPI``, exceptions applied.

    Validate a ``requests`` call with
    ``spec.validate_request(openapi_core.contrib.requests.RequestsOpenAPIRequest(prepared))``.
    """
    if version not in ("v1", "v2"):
        raise ValueError(f"unknown Pipedrive spec version {version!r}")
    return _openapi(f"pipedrive/{version}")


def zoho_spec(name: str) -> Any:
    """A Zoho Books spec (``contacts``, ``contact-persons``, ``invoices``, ``customer-payments``,
    ``organizations``) as an ``openapi_core.OpenAPI``, exceptions applied."""
    if name not in ZOHO_SPEC_NAMES:
        raise ValueError(f"unknown Zoho Books spec {name!r}; one of {ZOHO_SPEC_NAMES}")
    return _openapi(f"zoho-books/{name}")


class ResponseAudit:
    """Checks every 2xx answer of the watched simulators against the official specs.

    :meth:`watch` wraps a simulator's WSGI app; for each API request the simulator checked (it
    leaves the :class:`~connector.sandbox.spec_check.SpecRequest` in the environ), the answer is
    validated with openapi-core response validation, exceptions applied. ``problems`` lists
    ``"<METHOD> <path>: <what is wrong>"``; ``checked`` counts the operations validated.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: Counter[str] = Counter()

    def watch(self, simulator: Any) -> None:
        check = simulator.spec_check
        if check is None:
            raise ValueError("the simulator is not strict: nothing to audit")
        inner = simulator.app.wsgi_app

        def audited(environ: dict[str, Any], start_response: Any) -> Any:
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                captured["status"], captured["headers"] = status, headers
                return start_response(status, headers, *args)

            answer = inner(environ, capture)
            try:
                body = b"".join(answer)
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
            spec_request = environ.get(SPEC_REQUEST_KEY)
            if spec_request is not None and "status" in captured:
                status = int(captured["status"].split()[0])
                content_type = dict((k.lower(), v) for k, v in captured["headers"]).get(
                    "content-type", ""
                )
                problem = check.response_problem(spec_request, status, content_type, body)
                operation = _ID.sub("/{id}", spec_request.operation)
                if 200 <= status < 300 and check.spec_name(spec_request.path):
                    self.checked[operation] += 1
                if problem:
                    self.problems.append(f"{operation}: {problem}")
            return [body]

        simulator.app.wsgi_app = audited

    def assert_clean(self) -> None:
        assert not self.problems, "simulator answers that break the spec:\n" + "\n".join(
            dict.fromkeys(self.problems)
        )
