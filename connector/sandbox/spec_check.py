"""Check simulator traffic against the vendors' official OpenAPI specs (the strict sandbox).

The specs are read from ``CONNECTOR_SPECS_DIR`` (default ``<repo>/../shared/reference/specs``),
patched by :mod:`connector.sandbox.spec_exceptions` and built into ``openapi_core`` objects once
per process. :meth:`SpecCheck.refusal` answers an incoming request with ``None`` (it fits the
spec) or the vendor-shaped error the real API gives: Pipedrive's
``{"success": false, "error", "error_info", "data": null, "additional_data": null}``, Zoho's
``{"code": <nonzero>, "message"}``; 404 for a path the spec does not know, 400 for a missing
required property or parameter, a wrong type, or (Pipedrive v2 writes) an unknown property.
:meth:`SpecCheck.response_problem` checks a simulator answer the same way (the tests use it).

Authentication is the simulators' own job and runs first, as on the real APIs; the spec's
security requirements are not checked here.

``openapi-core`` and PyYAML are development dependencies: they are imported on first use, with a
clear error when missing.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.sandbox.common import pipedrive_error_body
from connector.sandbox.spec_exceptions import (
    PIPEDRIVE_SPECS,
    UNCHECKED_ZOHO_PATHS,
    ZOHO_SPECS,
    apply_exceptions,
)

__all__ = [
    "ENV_SPECS_DIR",
    "ENV_STRICT",
    "SPEC_REQUEST_KEY",
    "Refusal",
    "SpecCheck",
    "SpecRequest",
    "SpecsMissingError",
    "default_specs_dir",
    "load_spec_dict",
    "openapi_spec",
    "strict_from_env",
]

ENV_SPECS_DIR = "CONNECTOR_SPECS_DIR"
ENV_STRICT = "CONNECTOR_SANDBOX_STRICT"
# The simulators leave the checked request in the WSGI environ under this key, so a test can
# check the answer against the same operation (tests/sandbox/spec_responses.py).
SPEC_REQUEST_KEY = "connector.sandbox.spec_request"
VENDOR_SPECS = {"pipedrive": PIPEDRIVE_SPECS, "zoho": ZOHO_SPECS}
_HOSTS = {"pipedrive": "https://api.pipedrive.com", "zoho": "https://www.zohoapis.com"}
# A real v1 400's error_info (pipedrive.md §6.1, client-nodejs issue 297); 404s keep the short one.
_PD_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
_PD_INFO_404 = "Please check developers.pipedrive.com"
# Zoho Books error codes the simulator uses (connector.sandbox.zoho_books; zoho-books.md §6.2).
_ZOHO_INVALID_URL = 5
_ZOHO_INVALID_VALUE = 2
_ZOHO_REQUIRED = 4
_ZOHO_NOT_JSON = 1038  # "JSON is not well formed": also the answer to a form-encoded body (§2.4)


class SpecsMissingError(RuntimeError):
    """The spec files are absent, or openapi-core / PyYAML are not installed."""


def default_specs_dir() -> Path:
    """``$CONNECTOR_SPECS_DIR``, or ``../shared/reference/specs`` next to the repository."""
    configured = os.environ.get(ENV_SPECS_DIR)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "shared" / "reference" / "specs"


def strict_from_env() -> bool:
    """The default of the simulators' ``strict`` option: on unless ``CONNECTOR_SANDBOX_STRICT=0``."""
    return os.environ.get(ENV_STRICT, "1").strip().lower() not in ("0", "false", "no", "off")


def _spec_file(name: str, directory: Path) -> Path:
    return directory / f"{name}.yml"


def _require_files(names: tuple[str, ...], directory: Path) -> None:
    missing = [
        str(_spec_file(n, directory)) for n in names if not _spec_file(n, directory).is_file()
    ]
    if missing:
        raise SpecsMissingError(
            f"the strict sandbox needs the official OpenAPI specs, missing: {', '.join(missing)}. "
            f"Point {ENV_SPECS_DIR} at the specs directory (default ../shared/reference/specs), "
            f"or pass strict=False / set {ENV_STRICT}=0 to run the simulator unchecked."
        )


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SpecsMissingError(
            f"the strict sandbox needs {module.split('.')[0]} (a development dependency): "
            f"run `make install`, or set {ENV_STRICT}=0"
        ) from error


_lock = threading.RLock()


@functools.lru_cache(maxsize=32)
def _raw_spec(name: str, directory: str) -> dict[str, Any]:
    yaml = _import("yaml")
    path = _spec_file(name, Path(directory))
    with path.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    return loaded


def load_spec_dict(
    name: str, directory: Path | None = None, *, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A fresh copy of spec ``name`` (``pipedrive/v2``, ``zoho-books/contacts``...), exceptions
    applied (but those whose summary is in ``skip``)."""
    folder = directory or default_specs_dir()
    _require_files((name,), folder)
    with _lock:
        raw = _raw_spec(name, str(folder))
    return apply_exceptions(name, copy.deepcopy(raw), skip=skip)


@functools.lru_cache(maxsize=32)
def _built(name: str, directory: str, skip: frozenset[str]) -> Any:
    openapi_core = _import("openapi_core")
    validators = _import("openapi_core.validation.request.validators")

    base: Any = validators.V30RequestValidator

    class RequestValidator(base):  # type: ignore[misc]
        """Parameters and body; authentication is the simulator's (it runs first)."""

        def _iter_errors(self, request: Any, operation: Any, path: Any) -> Iterator[Exception]:
            try:
                self._get_parameters(request.parameters, operation, path)
            except validators.ParametersError as exc:
                yield from exc.errors
            try:
                self._get_body(request.body, request.content_type, operation)
            except validators.MissingRequestBody:
                pass
            except validators.RequestBodyValidationError as exc:
                yield exc

    # The specs pass openapi-spec-validator (reference pipedrive.md §7); re-validating them on
    # every load costs over a second for Pipedrive v1, so it is skipped.
    config = openapi_core.Config(spec_validator_cls=None, request_validator_cls=RequestValidator)
    spec = load_spec_dict(name, Path(directory), skip=skip)
    return openapi_core.OpenAPI.from_dict(spec, config=config)


def openapi_spec(
    name: str, directory: Path | None = None, *, skip: frozenset[str] = frozenset()
) -> Any:
    """Spec ``name`` as an ``openapi_core.OpenAPI`` (exceptions applied), built once per process."""
    folder = directory or default_specs_dir()
    _require_files((name,), folder)
    with _lock:
        return _built(name, str(folder), skip)


@dataclass
class SpecRequest:
    """A request as the vendor sees it: ``path`` is the API path (``/api/v2/persons``,
    ``/v1/users/me``, ``/books/v3/contacts``), without the simulator's own prefixes."""

    method: str
    path: str
    query: Mapping[str, Any] = field(default_factory=dict)  # a MultiDict or a plain mapping
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = ""
    body: bytes = b""

    @property
    def operation(self) -> str:
        return f"{self.method.upper()} {self.path}"


class _OpenAPIRequest:
    """``openapi_core.protocols.Request`` for a :class:`SpecRequest`."""

    def __init__(self, host_url: str, request: SpecRequest) -> None:
        datatypes = _import("openapi_core.datatypes")
        structures = _import("werkzeug.datastructures")
        query = request.query
        if not hasattr(query, "getlist"):
            query = structures.MultiDict(dict(query))
        self.host_url = host_url
        self.path = request.path
        self.method = request.method.lower()
        self.body = request.body or None
        self.content_type = (request.content_type or "application/octet-stream").lower()
        self.parameters = datatypes.RequestParameters(
            query=structures.ImmutableMultiDict(query),
            header=structures.Headers(dict(request.headers)),
            cookie=structures.ImmutableMultiDict(),
        )


class _OpenAPIResponse:
    def __init__(self, status: int, content_type: str, data: bytes) -> None:
        structures = _import("werkzeug.datastructures")
        self.status_code = status
        self.content_type = content_type
        self.data = data
        self.headers = structures.Headers({"Content-Type": content_type})


@dataclass(frozen=True)
class Refusal:
    """The answer to a request the spec refuses."""

    status: int
    body: dict[str, Any]


class SpecCheck:
    """Spec checks for one vendor (``pipedrive`` or ``zoho``).

    Construction only checks that the spec files exist (a clear :class:`SpecsMissingError` otherwise);
    the specs are parsed on the first request and shared by every simulator in the process.
    """

    def __init__(
        self, vendor: str, directory: Path | None = None, *, skip: frozenset[str] = frozenset()
    ) -> None:
        if vendor not in VENDOR_SPECS:
            raise ValueError(f"unknown vendor {vendor!r}; one of {sorted(VENDOR_SPECS)}")
        self.vendor = vendor
        self.directory = directory or default_specs_dir()
        self.skip = skip  # exceptions left out, by summary (tests show each one is needed)
        _require_files(VENDOR_SPECS[vendor], self.directory)
        _import("openapi_core")

    # -- which spec --------------------------------------------------------------------------

    def spec_name(self, path: str) -> str | None:
        """The spec that describes ``path``, or None when no spec covers it (not checked)."""
        if self.vendor == "pipedrive":
            return "pipedrive/v2" if path.startswith("/api/v2/") else "pipedrive/v1"
        rest = path.removeprefix("/books/v3")
        if rest.startswith(UNCHECKED_ZOHO_PATHS):
            return None
        segments = rest.strip("/").split("/")
        if "contactpersons" in segments[:3]:
            return "zoho-books/contact-persons"
        module = {
            "contacts": "contacts",
            "invoices": "invoices",
            "customerpayments": "customer-payments",
            "organizations": "organizations",
        }.get(segments[0])
        return f"zoho-books/{module}" if module else "zoho-books/contacts"

    def spec(self, name: str) -> Any:
        return openapi_spec(name, self.directory, skip=self.skip)

    # -- requests ----------------------------------------------------------------------------

    def refusal(self, request: SpecRequest) -> Refusal | None:
        """None when ``request`` fits its spec, else the vendor's error answer."""
        name = self.spec_name(request.path)
        if name is None:
            return None
        spec = self.spec(name)
        wrapped = _OpenAPIRequest(_HOSTS[self.vendor], request)
        error = next(iter(spec.request_validator.iter_errors(wrapped)), None)
        if error is None:
            return None
        return self._answer(error, request.path)

    def _answer(self, error: Exception, path: str) -> Refusal:
        kind = type(error).__name__
        if kind in ("PathNotFound", "ServerNotFound", "OperationNotFound"):
            if self.vendor == "pipedrive":
                return Refusal(404, pipedrive_error_body("Unknown method .", _PD_INFO_404))
            status = 405 if kind == "OperationNotFound" else 404
            return Refusal(status, {"code": _ZOHO_INVALID_URL, "message": "Invalid URL Passed"})
        required, name, detail = _describe(error)
        not_json = _causes(error) & {"MediaTypeNotFound", "MediaTypeDeserializeError"}
        if self.vendor == "zoho" and not_json:
            return Refusal(400, {"code": _ZOHO_NOT_JSON, "message": "JSON is not well formed"})
        if self.vendor == "pipedrive" and "/webhooks" in path:
            # The webhooks API has its own error shape (pipedrive.md §6.1).
            problem = "is required" if required else detail
            errors = {name or "body": [problem]}
            return Refusal(400, {"status": "error", "success": False, "errors": errors})
        if self.vendor == "pipedrive":
            return Refusal(400, pipedrive_error_body(f"Validation failed: {detail}", _PD_INFO))
        if required:
            return Refusal(400, {"code": _ZOHO_REQUIRED, "message": f"{name} is required."})
        return Refusal(
            400, {"code": _ZOHO_INVALID_VALUE, "message": f"Invalid value passed for {name}"}
        )

    # -- responses ---------------------------------------------------------------------------

    def response_problem(
        self, request: SpecRequest, status: int, content_type: str, data: bytes
    ) -> str | None:
        """None when a 2xx answer to ``request`` fits the spec, else what is wrong.

        Only 2xx answers are checked: the specs declare almost no error responses
        (pipedrive.md §7 caveat 4).
        """
        if not 200 <= status < 300:
            return None
        name = self.spec_name(request.path)
        if name is None:
            return None
        spec = self.spec(name)
        wrapped = _OpenAPIRequest(_HOSTS[self.vendor], request)
        answer = _OpenAPIResponse(status, content_type, data)
        problems = [_detail(e) for e in spec.response_validator.iter_errors(wrapped, answer)]
        return "; ".join(problems) or None


def _causes(error: BaseException) -> set[str]:
    names: set[str] = set()
    seen: BaseException | None = error
    while seen is not None:
        names.add(type(seen).__name__)
        seen = seen.__cause__
    return names


def _schema_errors(error: BaseException) -> list[Any]:
    seen: BaseException | None = error
    while seen is not None:
        found = getattr(seen, "schema_errors", None)
        if found:
            return list(found)
        seen = seen.__cause__
    return []


def _describe(error: Exception) -> tuple[bool, str, str]:
    """(is a missing required thing, the property or parameter's name, a human detail)."""
    kind = type(error).__name__
    name = str(getattr(error, "name", "") or "")
    if kind == "MissingRequiredParameter":
        return True, name, f'"{name}" is required'
    if kind == "MissingRequestBody":
        return True, "JSONString", "a request body is required"
    schema_errors = _schema_errors(error)
    if not schema_errors:
        cause = error.__cause__
        what = name or "request body"
        return False, what, f"{what}: {cause or error}"
    first = schema_errors[0]
    location = ".".join(str(part) for part in first.absolute_path)
    if first.validator == "required":
        missing = str(first.message).split("'")[1] if "'" in first.message else first.message
        full = f"{location}.{missing}" if location else missing
        return True, missing, f'"{full}" is required'
    if first.validator == "additionalProperties":
        return False, location or "body", f"{first.message} (at {location or 'the top level'})"
    target = location or name or "body"
    return False, target.split(".")[-1], f'"{target}": {first.message}'


def _detail(error: BaseException) -> str:
    """Where and how an answer breaks the spec, without repeating the whole value."""
    found: list[str] = []
    stack = list(_schema_errors(error))
    while stack and len(found) < 8:
        schema_error = stack.pop(0)
        if schema_error.context:
            stack[:0] = list(schema_error.context)
            continue
        location = ".".join(str(part) for part in schema_error.absolute_path) or "<root>"
        found.append(f"{location}: {str(schema_error.message)[:120]}")
    if not found:
        return f"{type(error).__name__}: {str(error)[:300]}"
    return "; ".join(dict.fromkeys(found))
