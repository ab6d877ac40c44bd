"""Local simulators of Zoho Books and Pipedrive, built from the reference docs.

They run in-process for tests (mounted on ``responses``) and as real HTTP servers on loopback
for end-to-end runs, the demo and the benchmarks.
"""

from __future__ import annotations
