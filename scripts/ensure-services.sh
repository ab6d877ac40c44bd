#!/usr/bin/env bash
# Make sure the real PostgreSQL and Redis the integration tests use are up.
# Starts them when they are installed but stopped; fails loudly when they cannot be reached.
set -uo pipefail

PGHOST=${PGHOST:-127.0.0.1}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}

pg_up() { pg_isready -q -h "$PGHOST" -p 5432 >/dev/null 2>&1; }
redis_up() { redis-cli -h "$REDIS_HOST" -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "ensure-services: PostgreSQL is not answering; trying to start it" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
  echo "ensure-services: PostgreSQL at $PGHOST:5432 cannot be reached; integration tests need it" >&2
  exit 1
fi

if ! redis_up; then
  echo "ensure-services: Redis is not answering; trying to start it" >&2
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "ensure-services: Redis at $REDIS_HOST:6379 cannot be reached; integration tests need it" >&2
  exit 1
fi

# The tests use database "test"; create it when missing (trust auth on this kind of machine).
if ! psql -h "$PGHOST" -U postgres -d test -tAc "select 1" >/dev/null 2>&1; then
  createdb -h "$PGHOST" -U postgres test >/dev/null 2>&1 || {
    echo "ensure-services: database 'test' is missing and could not be created" >&2
    exit 1
  }
fi
echo "ensure-services: PostgreSQL and Redis are up"
