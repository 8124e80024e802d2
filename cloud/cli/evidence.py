"""``boilertwin cloud thread ...``: check the digital thread's hash chains, sign checkpoints."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cloud import evidence
from cloud.cli.common import ConfigOption, DbOption, session_for, settings_from
from cloud.keys import load_command_key
from protocols.cose import public_key_from_pem

thread_app = typer.Typer(help="The digital thread's hash chains.", no_args_is_help=True)


@thread_app.command("check")
def thread_check(
    device: Annotated[
        str | None, typer.Option(help="Only this boiler's chain (default: every chain).")
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Walk each chain from its start; report the first broken link or the first checkpoint
    it no longer matches. Exit 1 if any chain is broken."""
    settings = settings_from(config, db_url=db)
    keys = {
        pem.stem: public_key_from_pem(pem.read_bytes()) for pem in settings.keys_dir.glob("*.pem")
    }
    broken = 0
    with session_for(settings) as session:
        chains = [device] if device else evidence.chains(session)
        for chain in chains:
            problem = evidence.check_chain(session, chain, keys)
            if problem:
                broken += 1
                typer.echo(f"{chain}: BROKEN: {problem}")
            else:
                typer.echo(f"{chain}: holds")
    typer.echo(f"{len(chains)} chain(s) checked, {broken} broken")
    raise typer.Exit(1 if broken else 0)


@thread_app.command("checkpoint")
def thread_checkpoint(config: ConfigOption = None, db: DbOption = None) -> None:
    """Sign the head of every chain that moved now (``cloud serve`` does it every
    ``checkpoint_interval_s``)."""
    settings = settings_from(config, db_url=db)
    key = load_command_key(settings.keys_dir, settings.command_kid)
    with session_for(settings) as session:
        signed = evidence.checkpoint_all(session, key, int(time.time() * 1000))
    typer.echo(f"{signed} chain(s) signed with {key.kid}")
