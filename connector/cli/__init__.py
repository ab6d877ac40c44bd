"""The ``connector`` command line.

Exit codes: 0 ok, 1 failure, 2 usage (click's own). Commands that list things take ``--json``.
Each system's commands live in their own module and are registered here.
"""

from __future__ import annotations

import click

from connector import __version__
from connector.cli.common import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connector")
def main() -> None:
    """Keep Zoho Books and Pipedrive in sync."""


def _register() -> None:
    from connector.cli import budget, db, ping, pipedrive, sandbox, secrets, sync, webhooks, zoho

    main.add_command(db.db)
    main.add_command(secrets.secrets)
    main.add_command(pipedrive.pipedrive)
    main.add_command(budget.budget)
    main.add_command(zoho.zoho)
    main.add_command(ping.ping)
    main.add_command(sandbox.sandbox)
    main.add_command(webhooks.webhooks)
    from connector.cli import status as status_cli

    main.add_command(status_cli.status)
    main.add_command(status_cli.doctor)
    for command in (sync.plan, sync.backfill, sync.sync_one, sync.audit, sync.review, sync.retry):
        main.add_command(command)


_register()


def entry() -> None:
    """Console-script entry point with connector's error handling."""
    run_main(main)
