"""One object per process holding what every entry point needs: settings, database, Redis, keys.

The CLI, the web app and the workers all build it the same way, so they cannot disagree about
configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from connector.connections import ConnectionStore
from connector.crypto import SecretBox
from connector.db import make_engine, make_session_factory, session_scope
from connector.settings import Settings

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Lazily opened resources for one process."""

    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)
    _sessions: sessionmaker[Session] | None = field(default=None, repr=False)
    _redis: redis.Redis | None = field(default=None, repr=False)
    _autocommit_engine: Engine | None = field(default=None, repr=False)
    # Short-lived answers shared by requests in this process (e.g. the receiver's backpressure).
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    # Extra ``create_engine`` arguments, e.g. the receiver's ``pool_pre_ping=False``.
    engine_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, **engine_options: Any) -> AppContext:
        """Build from the environment (raises ConfigError listing every problem)."""
        return cls(settings=Settings.from_env(), engine_options=engine_options)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine."""
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url, **self.engine_options)
        return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The session factory."""
        if self._sessions is None:
            self._sessions = make_session_factory(self.engine)
        return self._sessions

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success."""
        with session_scope(self.sessions) as session:
            yield session

    @contextmanager
    def autocommit_session(self) -> Iterator[Session]:
        """A session in which every statement commits on its own.

        For a write that is one statement (the receiver storing a webhook): no BEGIN and no
        COMMIT round trips. Its own pool, so no connection switches mode on every checkout.
        """
        if self._autocommit_engine is None:
            self._autocommit_engine = make_engine(
                self.settings.database_url, isolation_level="AUTOCOMMIT", **self.engine_options
            )
        with Session(self._autocommit_engine, expire_on_commit=False) as session:
            yield session
            session.flush()

    @property
    def redis(self) -> redis.Redis:
        """A Redis client (a connection pool; safe to share between threads)."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=10, socket_connect_timeout=5
            )
        return self._redis

    @functools.cached_property
    def box(self) -> SecretBox:
        """Encrypts and decrypts stored secrets."""
        return SecretBox(self.settings.secret_keys)

    def store(self, session: Session) -> ConnectionStore:
        """A connection store over ``session``."""
        return ConnectionStore(session, self.box)

    def close(self) -> None:
        """Release pooled connections (after a fork, or at exit)."""
        for engine in (self._engine, self._autocommit_engine):
            if engine is not None:
                engine.dispose()
        if self._redis is not None:
            self._redis.close()
