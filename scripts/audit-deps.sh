#!/usr/bin/env bash
# Audit the locked dependencies for known vulnerabilities (pip-audit, PyPI advisory data).
#
# Fails when a locked package has a known vulnerability, AND when any package could not be
# checked (advisory service unreachable, package unknown to it): pip-audit without --strict
# reports "No known vulnerabilities found" after skipping everything, which would pass silently.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
LOCK="${1:-requirements/constraints.txt}"
SERVICE="${AUDIT_SERVICE:-pypi}"   # pypi | osv

if [[ ! -x "$VENV/bin/pip-audit" ]]; then
  "$VENV/bin/pip" install -q pip-audit
fi

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# --no-deps --disable-pip: every line of the lock is pinned, so nothing is resolved or installed.
if "$VENV/bin/pip-audit" -r "$LOCK" --no-deps --disable-pip --strict \
    --vulnerability-service "$SERVICE" --progress-spinner off >"$report" 2>&1; then
  cat "$report"
  echo "audit-deps: every locked package checked; no known vulnerabilities"
  exit 0
fi
cat "$report"
if grep -qiE "could not be audited|connection|timed out|max retries|HTTPError" "$report"; then
  echo "audit-deps: FAILED - the advisory service ($SERVICE) could not be used for every locked" >&2
  echo "audit-deps: package, so nothing is proven. Check network access to it, or retry with" >&2
  echo "audit-deps: AUDIT_SERVICE=osv (or pypi)." >&2
else
  echo "audit-deps: FAILED - known vulnerabilities in $LOCK (see above)" >&2
fi
exit 1
