"""Zoho Books page-number pagination: ``page``/``per_page`` and ``page_context.has_more_page``.

Reference §4.2: lists are paged 200 at a time by default, but a newer OAS says 10, so
``per_page`` is always sent explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.errors import ServerError

__all__ = ["MAX_PER_PAGE", "PagePaginator"]

MAX_PER_PAGE = 200


class PagePaginator:
    """Tracks the next page to ask for and when to stop.

    Args:
        per_page: items per page (1-200).
        start_page: first page to read (resuming a long read).
        max_pages: loop guard; a server that always says "more" cannot keep us forever.
    """

    def __init__(
        self, *, per_page: int = MAX_PER_PAGE, start_page: int = 1, max_pages: int = 100_000
    ) -> None:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        self.per_page = per_page
        self.page = start_page
        self.max_pages = max_pages
        self.pages_read = 0
        self.finished = False

    def params(self) -> dict[str, int]:
        """Query parameters for the next request."""
        return {"page": self.page, "per_page": self.per_page}

    def advance(self, body: Mapping[str, Any], items_on_page: int) -> None:
        """Move past the page just read.

        Raises:
            ServerError: the loop guard tripped (more pages claimed than is plausible).
        """
        self.pages_read += 1
        context = body.get("page_context")
        has_more = bool(context.get("has_more_page")) if isinstance(context, Mapping) else False
        # An empty page that claims more would loop forever; stop instead.
        if not has_more or items_on_page == 0:
            self.finished = True
            return
        if self.pages_read >= self.max_pages:
            raise ServerError(
                f"Zoho kept reporting more pages after {self.pages_read}; stopping",
                system="zoho",
            )
        self.page += 1
