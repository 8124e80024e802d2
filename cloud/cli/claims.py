"""``boilertwin cloud claims ...``: claim tokens for zero-touch gateway provisioning."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from cloud.cli.common import ConfigOption, DbOption, session_for, settings_from
from cloud.lifecycle_models import Claim
from cloud.provisioning import create_claims, revoke_batch

claims_app = typer.Typer(
    help="Claim tokens new gateways join the fleet with.", no_args_is_help=True
)

DURATION_RE = re.compile(r"(\d+)([mhd])")
UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def expiry_ms(text: str, now_ms: int) -> int:
    """``30m``, ``12h``, ``7d`` from now, or an ISO date/time (UTC unless it says)."""
    match = DURATION_RE.fullmatch(text.strip())
    if match:
        return now_ms + int(match.group(1)) * UNIT_MS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give a duration (30m, 12h, 7d) or an ISO date/time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@claims_app.command("create")
def claims_create(
    count: Annotated[int, typer.Option(min=1, help="How many tokens.")] = 1,
    batch: Annotated[str, typer.Option(help="What they are for (shown in every thread).")] = (
        "default"
    ),
    uses: Annotated[int, typer.Option(min=1, help="Gateways each token may register.")] = 1,
    model: Annotated[str | None, typer.Option(help="Only boilers of this model.")] = None,
    owner: Annotated[str | None, typer.Option(help="Bind claimed boilers to this owner.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Bind claimed boilers to this tenant.")] = None,
    expires: Annotated[str, typer.Option(help="30m, 12h, 7d, or an ISO date/time.")] = "7d",
    out: Annotated[
        Path | None, typer.Option(help="Write the tokens here (0600), not to the terminal.")
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Issue claim tokens; each is shown only now (the cloud keeps only its hash)."""
    settings = settings_from(config, db_url=db)
    now = int(time.time() * 1000)
    until = expiry_ms(expires, now)
    with session_for(settings) as session:
        issued = create_claims(
            session,
            count=count,
            batch=batch,
            expires_ms=until,
            now_ms=now,
            max_uses=uses,
            model=model,
            owner_id=owner,
            tenant_id=tenant,
        )
    text = "".join(f"{token}\n" for token in issued.tokens)
    when = datetime.fromtimestamp(until / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if out is not None:
        out.touch(mode=0o600)
        out.write_text(text)
        typer.echo(f"{count} token(s) for batch {batch!r} written to {out}", err=True)
    else:
        typer.echo(text, nl=False)
    scope = f", model {model}" if model else ""
    typer.echo(f"each good for {uses} gateway(s) until {when}{scope}", err=True)


@claims_app.command("list")
def claims_list(config: ConfigOption = None, db: DbOption = None) -> None:
    """Batches of tokens: how many, used, expired, revoked."""
    settings = settings_from(config, db_url=db)
    now = int(time.time() * 1000)
    with session_for(settings) as session:
        rows = session.execute(
            select(
                Claim.batch,
                func.count(),
                func.sum(Claim.max_uses),
                func.sum(Claim.uses),
                func.max(Claim.expires_ms),
                func.sum(func.cast(Claim.revoked, type_=Claim.max_uses.type)),
            ).group_by(Claim.batch)
        ).all()
    if not rows:
        typer.echo("no claim tokens")
        return
    for batch, tokens, allowed, used, until, revoked in rows:
        state = "expired" if until <= now else "open"
        typer.echo(f"{batch}: {tokens} token(s), {used}/{allowed} uses, {revoked} revoked, {state}")


@claims_app.command("revoke")
def claims_revoke(
    batch: Annotated[str, typer.Option(help="Revoke every token of this batch.")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Revoke a batch's tokens (gateways already claimed stay registered)."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        count = revoke_batch(session, batch)
    typer.echo(f"{count} token(s) of batch {batch!r} revoked")
