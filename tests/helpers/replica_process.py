"""A replica in its own process, for the multi-process network tests.

    python tests/helpers/replica_process.py PATH NAME COUNT EXPECTED [--peer HOST:PORT ...]

Opens the database in PATH, serves it on a free loopback port (printed as ``port N``), keeps a
live session with every ``--peer``, and, once a line arrives on stdin, writes COUNT keys
``NAME/i`` at a steady pace while syncing. Prints ``complete`` once it holds EXPECTED keys, then
keeps serving until its stdin closes, and exits 0. Any failed session is printed as
``error ...`` and ends the process with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import hyperdb
from hyperdb.replication import net


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("name")
    parser.add_argument("count", type=int)
    parser.add_argument("expected", type=int)
    parser.add_argument("--peer", action="append", default=[])
    args = parser.parse_args()
    db = hyperdb.open(args.path, durable=False)
    server = await net.serve(db, "127.0.0.1", 0)
    print(f"port {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    failed: list[BaseException] = []

    async def keep_synced(host: str, port: int) -> None:
        try:
            await net.sync(db, host, port, live=True, timeout=10.0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # reported below
            failed.append(exc)

    syncs = []
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        syncs.append(asyncio.ensure_future(keep_synced(host, int(port))))
    await loop.run_in_executor(None, sys.stdin.readline)  # "go": every replica is up
    stdin_closed = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.read))
    for i in range(args.count):
        await asyncio.to_thread(db.put, f"{args.name}/{i}", f"{args.name} wrote {i}".encode())
        await asyncio.sleep(0.005)
    while sum(1 for _ in db.range()) < args.expected:
        if failed:
            break
        await asyncio.sleep(0.02)
    # sessions that ended before the stop must have ended cleanly; those the stop ends may not,
    # and the stop is every replica's: the others stop one by one while this one waits
    errors = [result.error for result in server.results if result.error is not None]
    failed_first = list(failed)
    if not failed_first:
        print("complete", flush=True)
        await stdin_closed
    for task in syncs:
        task.cancel()
    await asyncio.gather(*syncs, return_exceptions=True)
    server.close()
    await server.wait_closed()
    db.close()
    for exc in [*failed_first, *errors]:
        print(f"error {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed_first or errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
