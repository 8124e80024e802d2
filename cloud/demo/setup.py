"""`prepare`: the last step of ``run-demo.sh`` (owners and tenants, which only the API sets),
ending with ``demo.json``, whose appearance means the demo is ready."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from cloud.demo.client import INFO_FILE, DemoError, DemoInfo, Http, Narrator, healthy

# -- set-up, run by run-demo.sh -----------------------------------------------------------------


def prepare(
    record: Mapping[str, Any], directory: Path, *, timeout: float = 45.0, out: TextIO | None = None
) -> None:
    """Wait until every boiler in `record` is online in the twin, set their owners and
    tenants, then write `record` as ``demo.json``: its appearance means the demo is ready."""
    info = DemoInfo.from_json(record)
    narrator = Narrator(out)
    api = Http(info.api)
    narrator.wait_for(lambda: healthy(info), "the cloud API", timeout)
    api.login(*info.user_with_role("admin"))

    def all_reporting() -> bool | None:
        page = api.call("GET", "/boilers?connectivity=online&limit=500")
        reporting = {item["id"] for item in page["items"] if item.get("status_label")}
        return True if all(b.id in reporting for b in info.boilers) else None

    narrator.wait_for(all_reporting, "every boiler to report its status", timeout, every=0.5)
    for boiler in info.boilers:
        people = {k: v for k, v in (("owner", boiler.owner), ("tenant", boiler.tenant)) if v}
        if people:
            _patch(api, boiler.id, people)
    narrator.say(f"{len(info.boilers)} boilers online and reporting; owners and tenants set")
    path = directory / INFO_FILE
    partial = path.with_suffix(".json.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    partial.replace(path)


def _patch(api: Http, device_id: str, changes: Mapping[str, str], attempts: int = 5) -> None:
    """PATCH with the current ETag, again if ingest moved the twin on in between (412)."""
    for _ in range(attempts):
        current = api.request("GET", f"/boilers/{device_id}")
        if current.status != 200:
            raise DemoError(f"GET boiler {device_id}: {current.problem()}", device_id=device_id)
        reply = api.request(
            "PATCH",
            f"/boilers/{device_id}",
            json_body=dict(changes),
            headers={"If-Match": current.headers.get("etag", "")},
        )
        if reply.status == 200:
            return
        if reply.status != 412:
            raise DemoError(f"PATCH boiler {device_id}: {reply.problem()}", device_id=device_id)
    raise DemoError(f"boiler {device_id} kept changing under PATCH", device_id=device_id)
