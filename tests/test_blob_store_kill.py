"""Blob receive killed at random moments: no chunk is ever held without its proof.

A child process receives a 24 MiB blob into a durable LMDB store, range after range of 1 to 64
chunks in random order (each verified by ``BlobStore.ingest``, stored with its nodes and count in
one transaction), removes it once complete and starts over; now and then it also puts a 5 MiB
blob of its own (two transactions) and may remove it. The parent SIGKILLs it 15 times at random
moments, and after each kill reads the store as the kill left it: every chunk row has a ``blobs``
row and its leaf node in ``blob_tree``, and its bytes hash to that leaf; every ``blobs`` row
counts exactly its chunk rows; no tree row is left without its ``blobs`` row; every blob verifies
(``BlobStore.verify``: each chunk proves to be the blob's from the stored nodes).

Mutation tried, caught here and reverted: ``BlobStore._write`` committing the chunk rows in a
transaction of their own before the one that writes the nodes and the count ("chunk ... is held
without its leaf" after the first kill, in each of three runs).
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperdb.feed import merkle
from hyperdb.model.blob_store import BLOB_CONTENT_TABLES, BlobStore
from hyperdb.primitives import cbor
from hyperdb.storage import LMDBStorage
from tests.helpers.storage_dump import dump

KILLS = 15
SEED = 1818

CHILD = r"""
import random, sys
from hyperdb.feed.blob_tree import CHUNK_SIZE, chunk_count
from hyperdb.model.blob_store import BLOB_CONTENT_TABLES, BlobStore
from hyperdb.storage import LMDBStorage, MemoryStorage

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
big = random.Random(1).randbytes(384 * CHUNK_SIZE)
own = random.Random(2).randbytes(80 * CHUNK_SIZE + 11)
source = BlobStore(MemoryStorage(BLOB_CONTENT_TABLES))
ref = source.put(big)
count = chunk_count(ref.size)
with LMDBStorage(path, BLOB_CONTENT_TABLES) as storage:
    store = BlobStore(storage)
    print("ready", flush=True)
    while True:
        roll = rng.random()
        if roll < 0.1:
            mine = store.put(own)
            if rng.random() < 0.5:
                store.remove(mine.id)
            continue
        start = rng.randrange(count)
        end = min(count, start + rng.choice([1, 2, 4, 8, 16, 64]))
        chunks, proof = source.serve(ref, start, end)
        print(store.ingest(ref, start, chunks, proof), flush=True)
        if store.info(ref.id).complete:
            store.remove(ref.id)
"""


def check_store(path: Path) -> int:
    """The store as a kill left it keeps the invariant; returns how many chunks it holds."""
    with LMDBStorage(path, BLOB_CONTENT_TABLES, durable=False) as storage:
        rows = dump(storage)
        store = BlobStore(storage)
        counts = {key: cbor.decode(value)["h"] for key, value in rows["blobs"]}
        nodes = dict(rows["blob_tree"])
        held = dict.fromkeys(counts, 0)
        for key, chunk in rows["blob_chunks"]:
            blob_id, index = key[:32], struct.unpack(">I", key[32:])[0]
            leaf = nodes.get(blob_id + struct.pack(">Q", 2 * index))
            assert leaf is not None, f"chunk {index} is held without its leaf"
            assert merkle.hash_leaf(index, chunk).hash == leaf[:32]
            held[blob_id] += 1  # a KeyError here: a chunk without its blobs row
        assert held == counts, "a blobs row does not count its chunk rows"
        assert {key[:32] for key in nodes} <= set(counts), "tree nodes left without their blob"
        for blob_id in counts:
            assert store.verify(blob_id), blob_id.hex()
        return len(rows["blob_chunks"])


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_blob_receive_killed_at_random_moments_never_holds_a_chunk_without_its_proof(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "store"
    root = str(Path(__file__).resolve().parent.parent)
    ingested = 0
    held = []
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(SEED + kill)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": root},
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n", child.communicate()[1]
            time.sleep(rng.uniform(0.02, 0.8))
            assert child.poll() is None, child.communicate()[1]
        finally:
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate()
        ingested += sum(int(line) for line in out.split())
        held.append(check_store(path))
    assert ingested > 384  # the child got on between kills: more than one whole blob received
    assert len(set(held)) > KILLS // 2  # killed in many different states
