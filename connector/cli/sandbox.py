"""``connector sandbox``: run the local simulators as real HTTP servers."""

from __future__ import annotations

import click


@click.group()
def sandbox() -> None:
    """Local simulators of Zoho Books and Pipedrive (for demos, tests and benchmarks)."""


@sandbox.command("zoho")
@click.option("--port", type=int, default=8091, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--no-rate-limits", is_flag=True, help="Do not enforce Zoho's request limits.")
def zoho(port: int, host: str, no_rate_limits: bool) -> None:
    """Zoho Books and the Zoho Accounts servers of every data center, on one port.

    Data center DC is served under /DC/accounts (OAuth) and /DC/api (Books API); the control
    API is under /_sim/.
    """
    from connector.sandbox.zoho import serve

    click.echo(f"Zoho Books simulator on http://{host}:{port} (control API: /_sim/state)")
    click.echo(_mode())
    serve(port, host, rate_limits=not no_rate_limits)


@sandbox.command("pipedrive")
@click.option("--port", type=int, default=8092, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def pipedrive(port: int, host: str) -> None:
    """Pipedrive: company COMPANY's API is served under /c/COMPANY; OAuth under /oauth."""
    from connector.sandbox.pipedrive import serve

    click.echo(f"Pipedrive simulator on http://{host}:{port} (control API: /_sim/state)")
    click.echo(_mode())
    serve(port, host)


def _mode() -> str:
    from connector.sandbox.spec_check import ENV_STRICT, default_specs_dir, strict_from_env

    if strict_from_env():
        return f"strict: every API request is checked against the specs in {default_specs_dir()}"
    return f"not strict ({ENV_STRICT}=0): requests are not checked against the specs"
