"""Reading the status pages' forms as a browser would."""

from __future__ import annotations

import re

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on ``page`` (fails the test when there is none)."""
    match = _CSRF_FIELD.search(page)
    assert match, "no CSRF field on the page"
    return match.group(1)
