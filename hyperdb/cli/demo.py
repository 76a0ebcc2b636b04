"""``hyperdb demo``: the main job README runs. Three replicas of one database on LMDB write
concurrently, sync over encrypted loopback TCP, show what one of them was told (its change
stream), the conflict that follows and its resolution, an attachment (a blob) fetched by the
replicas whose policy wants it, keep a SQLite mirror of one, show the causal history, then revoke
a stolen device and verify their stores."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hyperdb
from hyperdb.api.database import Database
from hyperdb.cli.common import show_value, values_line
from hyperdb.primitives import crypto
from hyperdb.replication import net
from hyperdb.tools import inspect
from hyperdb.tools.mirror import Mirror, mirror

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
NAMES = ("alice", "bob", "carol")
TITLES = {"alice": "Hello", "bob": "Hi there", "carol": "Hey"}
POLICIES: dict[str, str | list[str]] = {"bob": "lazy", "carol": ["photos"]}
PHOTO_BYTES = 1_500_000


def run_demo(path: Path, count: int, say: Callable[[str], object] = print) -> int:
    if count < 1:
        print("hyperdb: error: --keys must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    path.mkdir(parents=True, exist_ok=True)
    alice = hyperdb.open(path / "alice", blob_policy="eager")  # keeps every attachment
    others = [
        hyperdb.open(path / name, key=alice.key, blob_policy=POLICIES[name]) for name in NAMES[1:]
    ]
    replicas = dict(zip(NAMES, [alice, *others], strict=True))
    try:
        return _demo(path, replicas, count, say)
    finally:
        for db in replicas.values():
            db.close()


def _demo(
    path: Path, replicas: dict[str, Database], count: int, say: Callable[[str], object]
) -> int:
    alice = replicas["alice"]
    say(f"database   {alice.key.hex()}")
    say(f"           three replicas in {path}/{{alice,bob,carol}} (LMDB), each with its own writer")
    for name, db in replicas.items():
        if name != "alice" and not alice.is_authorized(db.local_key):
            alice.authorize(db.local_key)
    with net.serve_in_background(alice) as server:
        say(f"alice      serves on {server.host}:{server.port} (Noise-encrypted TCP)")
        for name in NAMES[1:]:
            db = replicas[name]
            result = net.sync_blocking(db, server.host, server.port)
            say(
                f"{name:<10} synced with alice: {result.blocks_received} blocks in, "
                f"{result.blocks_sent} out; authorized: {db.is_authorized(db.local_key)}"
            )

        say("")
        say(f"offline, all three write at once: {count} keys each under notes/, then doc/title")
        threads = [
            threading.Thread(target=_write, args=(name, replicas[name], count)) for name in NAMES
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        for name in NAMES:
            (title,) = replicas[name].get("doc/title")
            say(f"  {name:<8} doc/title = {show_value(title.value)}   (seq {title.seq})")
        say(
            f"  {3 * (count + 1)} writes in {elapsed * 1000:.0f} ms: per replica a batch of "
            f"{count} (one signed append) and a put, each fsynced"
        )

        say("")
        carol = replicas["carol"]
        checkpoint = carol.version()
        _sync_all(replicas, server, say)
        told = [
            change_set for change_set in carol.changes(checkpoint) if change_set.changes
        ]  # the change stream: one change set per transaction, since carol's checkpoint
        say(
            f"changes    carol's change stream since her checkpoint: {len(told)} change sets "
            f"(one per transaction applied), {sum(len(c.changes) for c in told)} key changes; "
            "doc/title went:"
        )
        for change_set in told:
            for key, _, after in change_set.changes:
                if key == "doc/title":
                    say(f"           -> {values_line(after)}")
        conflict = carol.get("doc/title")
        say(f"conflict   carol's doc/title has {len(conflict)} concurrent values:")
        say(f"           {values_line(conflict)}")
        chosen = {
            show_value(node.value) for db in replicas.values() if (node := db.get_one("doc/title"))
        }
        say(
            "           get_one (last writer in causal order, ties by writer key) -> "
            + (f"{chosen.pop()} on every replica" if len(chosen) == 1 else f"DIFFERENT: {chosen}")
        )
        bob = replicas["bob"]
        resolution = bob.resolve("doc/title", b"Hello, world", bob.get("doc/title"))
        say(
            'resolve    bob writes doc/title = "Hello, world" over exactly the three values he '
            f"saw (seq {resolution.seq}; a value arriving meanwhile would refuse it: Conflict)"
        )
        _sync_all(replicas, server, say)
        versions = {db.version() for db in replicas.values()}
        finals = {name: values_line(db.get("doc/title")) for name, db in replicas.items()}
        say(f"resolved   doc/title on alice, bob, carol: {finals['alice']}")
        same = len(versions) == 1 and len(set(finals.values())) == 1
        say(
            "           every replica is on the same version: "
            + ("yes" if same else "NO")
            + f" ({len(list(alice.range(gte='notes/', lt='notes0')))} notes each)"
        )
        names = {db.local_key: name for name, db in replicas.items()}
        sources = {"node": "its own node", "receipt": "its signed receipt"}
        holders = [
            f"{names.get(key, key.hex()[:8])} ({sources[ack.source]})"
            for key, ack in alice.acks(resolution).items()
        ]
        say(
            "acks       who holds bob's resolution, as alice knows it: "
            + (", ".join(holders) if holders else "nobody yet")
        )
        say("")
        same = _attachment(replicas, server, say) and same

    say("")
    stats = mirror(alice, path / "alice.sqlite")
    with Mirror(path / "alice.sqlite") as sql:
        ((notes,),) = sql.query("SELECT count(*) FROM entries WHERE key LIKE 'notes/%'")
        ((title,),) = sql.query("SELECT value FROM entries WHERE key = 'doc/title'")
    say(
        f"mirror     alice into {path / 'alice.sqlite'}: {stats.sets} change sets applied "
        f"from its checkpoint; SQL: {notes} notes, doc/title = {show_value(title)}"
    )

    say("")
    say("history of doc/title, newest first (hyperdb history PATH --graph draws every write):")
    for group in alice.key_history("doc/title"):
        say("  " + values_line(group))
    say("")
    say("the causal graph of the last writes (hyperdb history alice --graph):")
    for line in inspect.draw(alice)[:8]:
        say("  " + line)

    say("")
    phone = hyperdb.open(path / "phone", key=alice.key)
    try:
        _lost_phone(replicas, phone, say)
    finally:
        phone.close()

    say("")
    healthy = True
    for name, db in replicas.items():
        report = db.verify()
        healthy = healthy and report.ok
        say(
            f"verify     {name}: {report.feeds} feeds, {report.blocks} blocks, "
            f"{report.tree_nodes} tree nodes, {report.keys} keys: "
            + ("ok" if report.ok else f"{len(report.damage)} problem(s)")
        )
    say("")
    say(f"next: hyperdb history {path / 'alice'} --graph | hyperdb get {path / 'bob'} doc/title")
    return EXIT_OK if same and healthy else EXIT_ERROR


def _lost_phone(
    replicas: dict[str, Database], phone: Database, say: Callable[[str], object]
) -> None:
    """A fourth device, scoped to phone/, is stolen: alice revokes its key, and what the
    thief writes afterwards reaches no one. Told once: on a later run the key stays revoked."""
    alice = replicas["alice"]
    known = {info.key: info for info in alice.writers_info()}.get(phone.local_key)
    if known is not None and known.revoked:
        say(f"phone      revoked in an earlier run (from seq {known.cutoff}): its key stays out")
        return
    alice.authorize(phone.local_key, prefixes=["phone"])
    with net.serve_in_background(alice) as server:
        net.sync_blocking(phone, server.host, server.port)
        phone.put("phone/list", b"milk, eggs")
        net.sync_blocking(phone, server.host, server.port)
        say(
            "phone      a fourth device, allowed to write under phone/ only, writes "
            "phone/list and syncs"
        )
        phone.put("phone/list", b"send 500 to ...")  # stolen: the thief writes
        phone.put("phone/more", b"...")
        revocation = alice.revoke(phone.local_key)
        cutoff = revocation.clock[phone.local_key]
        result = net.sync_blocking(phone, server.host, server.port)
        say(
            f"lost       the phone is stolen; alice revokes its key: the {cutoff - 1} write(s) "
            "she had seen of it stay"
        )
        say(
            f"           the thief wrote 2 more and synced with alice: {result.blocks_sent} "
            f"blocks sent, none applied; phone/list = " + values_line(alice.get("phone/list"))
        )
        for name in NAMES[1:]:
            net.sync_blocking(replicas[name], server.host, server.port)
    same = len({db.version() for db in replicas.values()}) == 1
    say(
        "           bob and carol learnt the revocation too: "
        + ("same version on all three" if same else "versions DIFFER")
        + " (hyperdb writers PATH shows roles and cut-offs)"
    )


def _attachment(
    replicas: dict[str, Database], server: net.BackgroundServer, say: Callable[[str], object]
) -> bool:
    """bob attaches a photo; alice (policy eager) and carol (policy photos/) fetch it."""
    bob, carol = replicas["bob"], replicas["carol"]
    photo = b"".join(
        crypto.blake2b(i.to_bytes(4, "big")) * 64 for i in range(-(-PHOTO_BYTES // 2048))
    )[:PHOTO_BYTES]
    ref = bob.put_blob(photo)
    bob.put("photos/beach.jpg", b"the beach, day 2", blobs=[ref])
    say(
        f"attach     bob puts photos/beach.jpg with a {ref.size:,}-byte photo: blob "
        f"{ref.id.hex()[:16]} (its id: the Merkle root of its 64 KiB chunks), listed in his "
        "signed node"
    )
    _sync_all(replicas, server, say)
    for name, db in replicas.items():
        status = next((s for s in db.blobs() if s.ref == ref), None)
        held = 0 if status is None else status.held_bytes
        policy = POLICIES.get(name, "eager")
        text = policy if isinstance(policy, str) else "under " + ", ".join(policy)
        say(f"           {name:<6} blob policy {text:<13} holds {held:,} bytes of it")
    same = carol.get_blob("photos/beach.jpg", timeout=10) == photo
    say(
        "           carol reads it: "
        + ("the same bytes, each chunk verified against the id" if same else "DIFFERENT bytes")
        + f"; bob's copy: stored once ({len(bob.blobs())} blob)"
    )
    return same


def _write(name: str, db: Database, count: int) -> None:
    db.batch(
        [
            {"type": "put", "key": f"notes/{name}-{i:04d}", "value": f"{name}'s note {i}".encode()}
            for i in range(count)
        ]
    )
    db.put("doc/title", TITLES[name].encode())


def _sync_all(
    replicas: dict[str, Database], server: net.BackgroundServer, say: Callable[[str], object]
) -> None:
    """bob and carol through alice, twice, so that each holds everyone's writes."""
    moved = chunks = 0
    for _ in range(2):
        for name in NAMES[1:]:
            result = net.sync_blocking(replicas[name], server.host, server.port)
            moved += result.blocks_received + result.blocks_sent
            chunks += result.blob_chunks_received + result.blob_chunks_sent
    blobs = f" and {chunks} blob chunks" if chunks else ""
    say(f"synced     bob and carol with alice, twice: {moved} blocks{blobs} moved")


__all__ = ["run_demo"]
