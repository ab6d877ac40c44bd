"""connector: keeps Zoho Books and Pipedrive in sync.

The package is a pure library (clients, auth, rate limiting, mapping, sync, storage). It knows
nothing of Flask or Celery; ``web/`` and ``workers/`` are thin adapters over it.
"""

from __future__ import annotations

__version__ = "0.1.0"
