"""Paginators for Pipedrive lists: v2 cursors and v1 offsets (reference §3.7).

Each is a small object fed one response body at a time, with a loop guard: an API that hands
back a cursor it already gave would otherwise make a sync spin forever, spending budget.
"""

from __future__ import annotations

from typing import Any

from connector.errors import ServerError

__all__ = ["CursorPaginator", "OffsetPaginator"]


class CursorPaginator:
    """v2 pagination: follow ``additional_data.next_cursor`` until it is ``null``."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.finished = False
        self.pages = 0
        self._seen: set[str] = set()

    def params(self) -> dict[str, str]:
        """Query parameters for the next page."""
        return {"cursor": self.cursor} if self.cursor else {}

    def advance(self, body: dict[str, Any]) -> None:
        """Take the cursor out of a page's body.

        Raises:
            ServerError: the API repeated a cursor (a loop).
        """
        self.pages += 1
        extra = body.get("additional_data") or {}
        cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
        if not cursor:
            self.cursor = None
            self.finished = True
            return
        if cursor in self._seen:
            raise ServerError("pagination loop: the API repeated a cursor", system="pipedrive")
        self._seen.add(cursor)
        self.cursor = str(cursor)


class OffsetPaginator:
    """v1 pagination: ``start`` + ``limit`` while ``more_items_in_collection`` is true."""

    def __init__(self, limit: int = 500) -> None:
        self.start = 0
        self.limit = limit
        self.finished = False
        self.pages = 0

    def params(self) -> dict[str, int]:
        """Query parameters for the next page."""
        return {"start": self.start, "limit": self.limit}

    def advance(self, body: dict[str, Any]) -> None:
        """Move to the next page, or finish.

        Raises:
            ServerError: the API pointed backwards (a loop).
        """
        self.pages += 1
        extra = body.get("additional_data") or {}
        page = extra.get("pagination") if isinstance(extra, dict) else None
        if not isinstance(page, dict) or not page.get("more_items_in_collection"):
            self.finished = True
            return
        next_start = page.get("next_start")
        if next_start is None:
            next_start = self.start + self.limit
        if int(next_start) <= self.start:
            raise ServerError("pagination loop: next_start did not advance", system="pipedrive")
        self.start = int(next_start)
