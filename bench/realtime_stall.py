"""What a device that never reads its socket costs the server: daphne's RSS over time.

    python -m bench.realtime_stall --database-url postgresql://user@host:port/name \\
        [--messages 300 --size 30000 --retry-s 0.5 --seconds 60]

One daphne process (in-memory channel layer) on a database of its own (`<name>_stallbench`, dropped
at the end). A sender stores `--messages` texts of `--size` bytes in a direct conversation; then the
other member's device authenticates and never reads again (`harness.wsclient.StalledDevice`), so
catch-up fills its socket and the rest of the window, and every retry (`E2EE_WS_RETRY_S`, doubling)
pushes the window again. Prints daphne's RSS every 5 seconds. Section 6.4 says a stalled device
holds no server memory: the RSS should stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench.database import database_drop, database_name, database_recreate, require_postgres, with_database_name
from bench.machine import process_rss_mib
from bench.realtime_load import SETTINGS_MODULE, database_migrate
from harness.polling import wait_until
from harness.provision import population_create
from harness.server import DaphneServer
from harness.wsclient import RealtimeDevice, StalledDevice


async def _measure(server: DaphneServer, args: argparse.Namespace) -> list[tuple[float, float, int]]:
    tag = uuid.uuid4().hex[:6]
    names = [f"stall{tag}_a", f"stall{tag}_b"]
    population = await asyncio.to_thread(
        population_create, server.url, usernames=names, devices_per_user=1, conversations=[names]
    )
    population.close()
    sender_profile, stalled_profile = population.profiles
    [conversation] = population.conversations
    sender = RealtimeDevice(sender_profile, [server.url], keep_bodies=False)
    sender.start()
    samples = []
    try:
        await wait_until(sender.connected.is_set, timeout=30, what="sender connected")
        body = "x" * args.size
        for _ in range(args.messages):
            sender.send_text(conversation, body)
        await wait_until(lambda: not sender.outbox, timeout=300, what="every message stored")
        stalled = StalledDevice(stalled_profile, server.url)
        samples.append((0.0, process_rss_mib(server.pid), 0))
        await stalled.open()
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds:
                await asyncio.sleep(5)
                samples.append((time.monotonic() - started, process_rss_mib(server.pid), stalled.unread_bytes()))
                print(f"t={samples[-1][0]:5.1f} s  daphne RSS {samples[-1][1]:6.1f} MiB", flush=True)
        finally:
            stalled.abort()
    finally:
        await sender.close()
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--size", type=int, default=30_000, help="bytes of text per message")
    parser.add_argument("--retry-s", type=float, default=0.5, help="E2EE_WS_RETRY_S of the server")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    require_postgres(args.database_url)
    name = f"{database_name(args.database_url)}_stallbench"
    url = with_database_name(args.database_url, name)
    database_recreate(source_url=args.database_url, name=name)
    workdir = Path(tempfile.mkdtemp(prefix="rtstall-"))
    server = DaphneServer(
        database_url=url,
        log_path=workdir / "daphne.log",
        settings_module=SETTINGS_MODULE,
        extra_env={"REDIS_URL": "", "E2EE_WS_RETRY_S": str(args.retry_s)},
    )
    try:
        database_migrate(url)
        server.start()
        samples = asyncio.run(_measure(server, args))
    finally:
        server.stop()
        database_drop(source_url=args.database_url, name=name)
    before, after = samples[0][1], max(rss for _, rss, _ in samples)
    print(
        f"{args.messages} messages of {args.size:,} bytes, retry {args.retry_s} s: daphne RSS {before:.1f} MiB before "
        f"the stalled device connected, up to {after:.1f} MiB (+{after - before:.1f}) within {args.seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
