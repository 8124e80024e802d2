"""Gateway lifecycle benchmark: the story of `tests.cloud.rollout_scenario` at fleet size.

Run with ``make bench`` (or ``python -m tests.bench.bench_lifecycle [GATEWAYS]``, default
1,000). One ``cloud serve`` (SQLite, as ``make demo``), a real Mosquitto with the project's
dynamic-security plugin, and the fleet simulator in this process: every gateway claims its
identity with one batch token, a configuration change reaches all of them, a release rolls
out in three waves (10 %, 50 %, 100 %), and a release broken on half of the gateways halts
itself in its first wave (5 %) and every gateway it reached goes back. The artifact is this
project's own wheel when it can be built, so the bytes per update are real.

All of it shares this machine's cores; timings are a floor for a real deployment.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.broker import running_broker
from tests.cloud.conftest import _Templates
from tests.cloud.rollout_scenario import fake_wheel, lifecycle_stack, run_story

ROOT = Path(__file__).resolve().parents[2]


def project_wheel(out: Path) -> Path:
    """This project's wheel (no dependencies), or a same-sized stand-in if pip cannot."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        check=False,
        timeout=300,
    )
    wheels = sorted(out.glob("boilertwin-*.whl"))
    if done.returncode == 0 and wheels:
        return wheels[0]
    print("(pip could not build the wheel: a 400 kB stand-in is used)")
    return fake_wheel(out / "boilertwin-0.2.0-py3-none-any.whl", 400 * 1024)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bt-lifecycle-") as tmp:
        work = Path(tmp)
        wheel = project_wheel(work / "wheel")
        templates = _Templates(work / "template")
        db_url = templates.sqlite(work / "cloud.db")
        async with running_broker(work / "broker") as broker:
            stack = lifecycle_stack(work / "cloud", broker, db_url)
            await stack.start()
            try:
                started = time.monotonic()
                figures = await run_story(stack, count, wheel)
                took = time.monotonic() - started
            finally:
                await stack.close()
    print(f"\nGateway lifecycle, {count:,} simulated gateways (whole story {took:.0f} s):")
    for line in figures.lines():
        print(f"  {line}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
