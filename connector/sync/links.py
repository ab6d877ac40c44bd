"""Links between records of the two systems, invoice and deal snapshots and sync cursors.

Links are unique per (connection, entity, id) on each side; creating one that a concurrent worker
already created returns the existing row instead of failing, so a plan applied twice is harmless.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.errors import BusyError
from connector.models import DealSnapshot, InvoiceLink, Link, ReviewItem, SyncCursor, utcnow

__all__ = ["LinkRepository"]


class LinkRepository:
    """Reads and writes links, invoice links, cursors and review items in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # Record links ------------------------------------------------------------------------

    def by_zoho(self, zoho_connection_id: int, entity: str, zoho_id: str) -> Link | None:
        """The link of a Zoho record, if any."""
        return self.session.scalar(
            sa.select(Link).where(
                Link.zoho_connection_id == zoho_connection_id,
                Link.zoho_entity == entity,
                Link.zoho_id == str(zoho_id),
            )
        )

    def by_pipedrive(
        self, pipedrive_connection_id: int, entity: str, pipedrive_id: str | int
    ) -> Link | None:
        """The link of a Pipedrive record, if any."""
        return self.session.scalar(
            sa.select(Link).where(
                Link.pipedrive_connection_id == pipedrive_connection_id,
                Link.pipedrive_entity == entity,
                Link.pipedrive_id == str(pipedrive_id),
            )
        )

    def persons_of_contact(self, zoho_connection_id: int, contact_id: str) -> list[Link]:
        """Links of a Zoho contact's contact persons."""
        return list(
            self.session.scalars(
                sa.select(Link).where(
                    Link.zoho_connection_id == zoho_connection_id,
                    Link.zoho_entity == "contact_person",
                    Link.zoho_parent_id == str(contact_id),
                )
            )
        )

    def all_for(self, pipedrive_connection_id: int, entity: str) -> list[Link]:
        """Every link of one Pipedrive entity type."""
        return list(
            self.session.scalars(
                sa.select(Link).where(
                    Link.pipedrive_connection_id == pipedrive_connection_id,
                    Link.pipedrive_entity == entity,
                )
            )
        )

    def link(
        self,
        *,
        zoho_connection_id: int,
        zoho_entity: str,
        zoho_id: str,
        pipedrive_connection_id: int,
        pipedrive_entity: str,
        pipedrive_id: str | int,
        zoho_parent_id: str | None = None,
    ) -> Link:
        """Create a link, or return the one that already joins the same Zoho record."""
        existing = self.by_zoho(zoho_connection_id, zoho_entity, zoho_id)
        if existing is not None:
            return existing
        link = Link(
            zoho_connection_id=zoho_connection_id,
            zoho_entity=zoho_entity,
            zoho_id=str(zoho_id),
            pipedrive_connection_id=pipedrive_connection_id,
            pipedrive_entity=pipedrive_entity,
            pipedrive_id=str(pipedrive_id),
            zoho_parent_id=zoho_parent_id,
        )
        try:
            with self.session.begin_nested():
                self.session.add(link)
        except sa.exc.IntegrityError:
            found = self.by_zoho(zoho_connection_id, zoho_entity, zoho_id)
            if found is not None:
                return found
            if self.by_pipedrive(pipedrive_connection_id, pipedrive_entity, pipedrive_id):
                # Another Zoho record took this Pipedrive record a moment ago (two workers
                # matched the same one). Its link is not ours to return: the next attempt
                # sees it taken and matches or creates anew.
                raise BusyError(
                    f"Pipedrive {pipedrive_entity} {pipedrive_id} was just linked to another "
                    "Zoho record",
                    system="connector",
                ) from None
            raise
        return link

    def repoint(self, pipedrive_connection_id: int, entity: str, old_id: str, new_id: str) -> int:
        """After a Pipedrive merge, move links from the merged-away record to the survivor.

        Where the survivor already has a link, the merged-away record's link is dropped instead
        (the unique constraint allows one link per Pipedrive record). Returns the links moved.
        """
        old = self.by_pipedrive(pipedrive_connection_id, entity, old_id)
        if old is None:
            return 0
        if self.by_pipedrive(pipedrive_connection_id, entity, new_id) is not None:
            old.state = "merged"
            old.pipedrive_id = f"merged:{old_id}:{old.id}"
            self.session.flush()
            return 0
        old.pipedrive_id = str(new_id)
        old.pipedrive_hash = None
        old.pipedrive_snapshot = None
        self.session.flush()
        return 1

    def relink(self, link: Link, pipedrive_id: str | int) -> None:
        """Point a link at another Pipedrive record (its own is gone); forget what we knew of it."""
        link.pipedrive_id = str(pipedrive_id)
        link.pipedrive_hash = None
        link.pipedrive_snapshot = None
        link.pipedrive_modified_at = None
        self.session.flush()

    # Deal snapshots ----------------------------------------------------------------------

    def deal_snapshot(self, pipedrive_connection_id: int, deal_id: str) -> DealSnapshot | None:
        """What we last know of a deal's invoice fields and currency, if anything."""
        return self.session.scalar(
            sa.select(DealSnapshot).where(
                DealSnapshot.pipedrive_connection_id == pipedrive_connection_id,
                DealSnapshot.deal_id == str(deal_id),
            )
        )

    def save_deal_snapshot(
        self,
        pipedrive_connection_id: int,
        deal_id: str,
        *,
        title: str,
        currency: str,
        custom_fields: dict[str, object],
        modified: dt.datetime | None,
    ) -> DealSnapshot:
        """Store (or replace) a deal's snapshot."""
        row = self.deal_snapshot(pipedrive_connection_id, deal_id)
        if row is None:
            row = DealSnapshot(
                pipedrive_connection_id=pipedrive_connection_id, deal_id=str(deal_id)
            )
            try:
                with self.session.begin_nested():
                    self.session.add(row)
            except sa.exc.IntegrityError:
                again = self.deal_snapshot(pipedrive_connection_id, deal_id)
                if again is None:
                    raise
                row = again
        row.title = title
        row.currency = currency
        row.custom_fields = dict(custom_fields)
        row.pipedrive_modified_at = modified
        self.session.flush()
        return row

    def forget_deal_snapshot(self, pipedrive_connection_id: int, deal_id: str) -> None:
        """Drop a deal's snapshot: its next write reads the deal first."""
        self.session.execute(
            sa.delete(DealSnapshot).where(
                DealSnapshot.pipedrive_connection_id == pipedrive_connection_id,
                DealSnapshot.deal_id == str(deal_id),
            )
        )
        self.session.flush()

    # Invoices ----------------------------------------------------------------------------

    def invoice(self, zoho_connection_id: int, invoice_id: str) -> InvoiceLink | None:
        """The stored snapshot of an invoice, if any."""
        return self.session.scalar(
            sa.select(InvoiceLink).where(
                InvoiceLink.zoho_connection_id == zoho_connection_id,
                InvoiceLink.invoice_id == str(invoice_id),
            )
        )

    def invoices_waiting_for_customer(self, zoho_connection_id: int, customer_id: str) -> list[str]:
        """Invoices recorded without a deal for ``customer_id``, not deleted: those that came
        before their customer was linked (and those that found no deal)."""
        return list(
            self.session.scalars(
                sa.select(InvoiceLink.invoice_id).where(
                    InvoiceLink.zoho_connection_id == zoho_connection_id,
                    InvoiceLink.customer_id == str(customer_id),
                    InvoiceLink.deal_id.is_(None),
                    InvoiceLink.status != "deleted",
                )
            )
        )

    def invoice_or_new(self, zoho_connection_id: int, invoice_id: str) -> InvoiceLink:
        """The stored snapshot of an invoice, created empty when missing."""
        found = self.invoice(zoho_connection_id, invoice_id)
        if found is not None:
            return found
        row = InvoiceLink(zoho_connection_id=zoho_connection_id, invoice_id=str(invoice_id))
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except sa.exc.IntegrityError:
            again = self.invoice(zoho_connection_id, invoice_id)
            if again is None:
                raise
            return again
        return row

    def invoices_of_deal(self, pipedrive_connection_id: int, deal_id: str) -> list[InvoiceLink]:
        """Every invoice counted towards a deal, across all Zoho organizations."""
        return list(
            self.session.scalars(
                sa.select(InvoiceLink)
                .where(
                    InvoiceLink.pipedrive_connection_id == pipedrive_connection_id,
                    InvoiceLink.deal_id == str(deal_id),
                )
                .order_by(InvoiceLink.id)
            )
        )

    # Cursors -----------------------------------------------------------------------------

    def cursor(self, connection_id: int, entity: str) -> SyncCursor:
        """The cursor of one connection and entity, created empty when missing."""
        found = self.session.scalar(
            sa.select(SyncCursor).where(
                SyncCursor.connection_id == connection_id, SyncCursor.entity == entity
            )
        )
        if found is not None:
            return found
        cursor = SyncCursor(connection_id=connection_id, entity=entity, seen_ids=[])
        try:
            with self.session.begin_nested():
                self.session.add(cursor)
        except sa.exc.IntegrityError:
            return self.cursor(connection_id, entity)
        return cursor

    def advance(
        self,
        cursor: SyncCursor,
        position: dt.datetime | None,
        seen_ids: Iterable[str] = (),
        resume_token: str | None = None,
    ) -> None:
        """Move a cursor forward (never back) after a batch has been applied."""
        ids = sorted({str(i) for i in seen_ids})
        if position is not None and (cursor.position is None or position > cursor.position):
            cursor.position = position
            cursor.seen_ids = ids
        elif position is not None and position == cursor.position:
            cursor.seen_ids = sorted(set(cursor.seen_ids or []) | set(ids))
        cursor.resume_token = resume_token
        cursor.last_run_at = utcnow()
        self.session.flush()

    # Review ------------------------------------------------------------------------------

    def open_review(
        self,
        *,
        kind: str,
        connection_id: int,
        entity: str,
        record_id: str,
        summary: str,
        candidates: list[dict[str, object]] | None = None,
    ) -> ReviewItem:
        """Open (or refresh) a review item; one per record and kind."""
        found = self.session.scalar(
            sa.select(ReviewItem).where(
                ReviewItem.kind == kind,
                ReviewItem.connection_id == connection_id,
                ReviewItem.entity == entity,
                ReviewItem.record_id == str(record_id),
            )
        )
        if found is None:
            found = ReviewItem(
                kind=kind, connection_id=connection_id, entity=entity, record_id=str(record_id)
            )
            self.session.add(found)
        if found.status != "ignored":
            found.status = "open"
        found.summary = summary
        found.candidates = list(candidates or [])
        self.session.flush()
        return found

    def open_reviews(self, kind: str, connection_id: int) -> list[ReviewItem]:
        """Open review items of one kind and connection, oldest first."""
        return list(
            self.session.scalars(
                sa.select(ReviewItem)
                .where(
                    ReviewItem.kind == kind,
                    ReviewItem.connection_id == connection_id,
                    ReviewItem.status == "open",
                )
                .order_by(ReviewItem.id)
            )
        )

    def close_review(self, *, kind: str, connection_id: int, entity: str, record_id: str) -> None:
        """Mark a review item resolved because the engine could now decide by itself."""
        found = self.session.scalar(
            sa.select(ReviewItem).where(
                ReviewItem.kind == kind,
                ReviewItem.connection_id == connection_id,
                ReviewItem.entity == entity,
                ReviewItem.record_id == str(record_id),
                ReviewItem.status == "open",
            )
        )
        if found is not None:
            found.status = "resolved"
            found.resolution = "matched automatically"
            found.resolved_at = utcnow()
            self.session.flush()
