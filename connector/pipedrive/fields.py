"""Custom field names → the company's 40-character field keys (reference §4).

Keys are random per company, so configuration speaks in field *names* ("Zoho Invoice Total") and
this registry resolves them from the fields API. Definitions are read once per entity and cached
in process memory and, shared by every worker, in Redis with a TTL: a fields list costs 10 tokens
and changes rarely. Keys are used exactly as Pipedrive returns them, never case- or
snake-converted (client-nodejs #297 shows what that breaks).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from connector.errors import ApiError, ConfigError, ValidationError
from connector.pipedrive.client import FIELD_ENTITIES, PipedriveClient

__all__ = ["DEFAULT_FIELD_SPECS", "FieldRegistry", "FieldSpec"]

logger = logging.getLogger(__name__)

_HASH_KEY = re.compile(r"\b[0-9a-f]{40}\b")
_SETUP_HINT = "run `connector pipedrive setup-fields` to create it, or fix the name in the config"


@dataclass(frozen=True)
class FieldSpec:
    """A custom field the sync needs: on which entity, under which name, of which type."""

    entity: str
    name: str
    field_type: str
    options: tuple[str, ...] | None = None


#: The fields ``connector pipedrive setup-fields`` creates unless configured otherwise.
DEFAULT_FIELD_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("deal", "Zoho Invoice Total", "monetary"),
    FieldSpec("deal", "Zoho Invoice Date", "date"),
    FieldSpec("deal", "Zoho Invoice Due Date", "date"),
    FieldSpec("deal", "Zoho Invoice Status", "varchar"),
    FieldSpec("deal", "Zoho Invoice Balance", "monetary"),
    FieldSpec("deal", "Zoho Invoice Number", "varchar"),
    FieldSpec("deal", "Zoho Payment Status", "varchar"),
    FieldSpec("deal", "Zoho Last Payment Date", "date"),
    FieldSpec("deal", "Zoho Expected Payment Date", "date"),
    FieldSpec("organization", "Zoho Contact ID", "varchar"),
    FieldSpec("person", "Zoho Contact ID", "varchar"),
)


def _slim(field: dict[str, Any]) -> dict[str, Any]:
    return {
        "field_code": field.get("field_code"),
        "field_name": field.get("field_name"),
        "field_type": field.get("field_type"),
        "is_custom_field": bool(field.get("is_custom_field")),
        "options": field.get("options"),
    }


def _normal(name: str) -> str:
    return " ".join(name.split()).casefold()


class FieldRegistry:
    """Resolves custom field names to keys for one Pipedrive company.

    Args:
        client: the company's client (reads ``client.fields``).
        redis: shared cache; ``None`` caches in this process only.
        cache_key_prefix: Redis key prefix, one per company, e.g. ``connector:pd:fields:42``.
        ttl: seconds a definition list stays cached (memory and Redis).
        clock: epoch seconds (tests).
    """

    def __init__(
        self,
        client: PipedriveClient,
        redis: redis.Redis | None = None,
        *,
        cache_key_prefix: str,
        ttl: float = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.redis = redis
        self.prefix = cache_key_prefix
        self.ttl = ttl
        self._clock = clock
        self._memory: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        #: Fields lists read from the API by this instance (tests, metrics).
        self.api_reads = 0

    # Reading ---------------------------------------------------------------------------

    def definitions(self, entity: str) -> list[dict[str, Any]]:
        """Every field definition of ``entity``, from cache when fresh."""
        if entity not in FIELD_ENTITIES:
            raise ValueError(f"entity must be one of {FIELD_ENTITIES}, not {entity!r}")
        now = self._clock()
        cached = self._memory.get(entity)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        shared = self._read_shared(entity)
        if shared is not None:
            self._memory[entity] = (now, shared)
            return shared
        fields = [_slim(f) for f in self.client.fields.list(entity)]
        self.api_reads += 1
        self._memory[entity] = (now, fields)
        self._store_shared(entity, fields)
        return fields

    def keys(self, entity: str) -> dict[str, str]:
        """Field name → key for every field of ``entity`` (first one wins on duplicate names)."""
        result: dict[str, str] = {}
        for field in self.definitions(entity):
            name, code = field.get("field_name"), field.get("field_code")
            if isinstance(name, str) and isinstance(code, str) and name not in result:
                result[name] = code
        return result

    def find(self, entity: str, name: str) -> dict[str, Any] | None:
        """The definition named ``name`` (exact, else case- and space-insensitive), or None."""
        definitions = self.definitions(entity)
        exact = [f for f in definitions if f.get("field_name") == name]
        loose = [
            f
            for f in definitions
            if isinstance(f.get("field_name"), str) and _normal(f["field_name"]) == _normal(name)
        ]
        matches = exact or loose
        if not matches:
            return None
        if len(matches) > 1:
            logger.warning(
                "pipedrive.fields.duplicate-name entity=%s name=%s count=%d",
                entity,
                name,
                len(matches),
            )
        # Custom fields first: a user field shadowing a system one is what the config means.
        matches.sort(key=lambda f: not f.get("is_custom_field"))
        return matches[0]

    def key_for(self, entity: str, name: str) -> str:
        """The key of the ``entity`` field called ``name``.

        Raises:
            ConfigError: no such field.
        """
        found = self.find(entity, name)
        if found is None or not found.get("field_code"):
            raise ConfigError([f"Pipedrive {entity} field {name!r} does not exist; {_SETUP_HINT}"])
        return str(found["field_code"])

    def field_type(self, entity: str, key: str) -> str | None:
        """The type (``monetary``, ``date``, ...) of the field with ``key``, or None if unknown."""
        for field in self.definitions(entity):
            if field.get("field_code") == key:
                return str(field.get("field_type") or "") or None
        return None

    # Refreshing ------------------------------------------------------------------------

    def refresh(self, entity: str | None = None) -> None:
        """Forget cached definitions (of one entity or all); the next read hits the API."""
        entities = [entity] if entity else list(FIELD_ENTITIES)
        for name in entities:
            self._memory.pop(name, None)
        if self.redis is not None:
            self.redis.delete(*(self._key(name) for name in entities))

    def refresh_on_unknown_key(self, error: BaseException) -> bool:
        """Refresh when a write was refused for a custom field (key deleted or renamed).

        Returns:
            True when the caller should re-resolve its keys and retry the write once.
        """
        if not isinstance(error, ValidationError):
            return False
        text = " ".join(str(part) for part in (error.message, error.body or "") if part)
        lowered = text.lower()
        if not (_HASH_KEY.search(text) or "custom field" in lowered or "field_code" in lowered):
            return False
        logger.info("pipedrive.fields.refresh-after-rejection status=%s", error.status)
        self.refresh()
        return True

    # Setup -----------------------------------------------------------------------------

    def missing(self, specs: Iterable[FieldSpec] = DEFAULT_FIELD_SPECS) -> list[FieldSpec]:
        """The specs with no field of that name yet."""
        return [spec for spec in specs if self.find(spec.entity, spec.name) is None]

    def ensure_fields(
        self,
        specs: Sequence[FieldSpec] = DEFAULT_FIELD_SPECS,
        *,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Create the fields of ``specs`` that do not exist yet; idempotent.

        Reads fresh definitions first (a stale cache would create duplicates).

        Returns:
            One entry per created (or, with ``dry_run``, to-be-created) field:
            ``{"entity", "name", "field_type", "key"}`` (``key`` is None on a dry run).
        """
        self.refresh()
        created: list[dict[str, Any]] = []
        touched: set[str] = set()
        for spec in specs:
            existing = self.find(spec.entity, spec.name)
            if existing is not None:
                if existing.get("field_type") != spec.field_type:
                    logger.warning(
                        "pipedrive.fields.type-differs entity=%s name=%s existing=%s wanted=%s",
                        spec.entity,
                        spec.name,
                        existing.get("field_type"),
                        spec.field_type,
                    )
                continue
            key: str | None = None
            if not dry_run:
                try:
                    field = self.client.fields.create(
                        spec.entity,
                        spec.name,
                        spec.field_type,
                        list(spec.options) if spec.options else None,
                    )
                except ApiError:
                    self.refresh()
                    raise
                key = str(field.get("field_code") or "") or None
                # Add it to the cached list rather than re-reading: a fields list costs 10.
                definition = _slim(field)
                definition["field_name"] = definition["field_name"] or spec.name
                definition["field_type"] = definition["field_type"] or spec.field_type
                self.definitions(spec.entity).append(definition)
                touched.add(spec.entity)
            created.append(
                {
                    "entity": spec.entity,
                    "name": spec.name,
                    "field_type": spec.field_type,
                    "key": key,
                }
            )
        for entity in touched:
            self._store_shared(entity, self.definitions(entity))
        return created

    # Internals ---------------------------------------------------------------------------

    def _key(self, entity: str) -> str:
        return f"{self.prefix}:{entity}"

    def _store_shared(self, entity: str, fields: list[dict[str, Any]]) -> None:
        if self.redis is not None:
            self.redis.set(self._key(entity), json.dumps(fields), ex=max(1, int(self.ttl)))

    def _read_shared(self, entity: str) -> list[dict[str, Any]] | None:
        if self.redis is None:
            return None
        raw = self.redis.get(self._key(entity))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, list) else None
