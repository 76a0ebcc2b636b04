"""The blob commands of the command line: ``attach``, ``cat-blob``, ``blobs`` and ``gc``.

In process (``hyperdb.cli.main``, its exit code, stdout as bytes, stderr): a multi-chunk file
attached and read back whole by key, by reference and into ``--output``; the listing and its
JSON; ``gc`` after the key is overwritten (kept within the retention window, removed with
``--retention 0``, then reads fail with the reason and ``verify`` passes); every kind of blob not
to be had; bad arguments refused before anything is written; the value stored per value
encoding; progress bars (forced, never in ``--json``, throttled, quiet for short transfers on a
terminal); memory bounded while a blob larger than it streams in and out. In subprocesses
(``integration``): ``cat-blob > FILE`` and ``attach -`` through real pipes, and the database
held by ``hyperdb serve``: ``attach`` and ``gc`` go through it, reads work beside it.

Mutations tried by hand, each caught: ``cat-blob`` reading the blob whole before writing (the
memory test's peak); ``attach`` storing the blob without referencing it in the put (reading it
back by key finds no blob); the reason dropped from the
``cat-blob`` error (the missing-blob tests); the progress bar drawn under ``--json`` (the JSON
test sees stderr); the throttle removed (the fake-clock test counts every redraw).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.cli import blobs as blob_cli
from hyperdb.cli import main
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef, blob_id_of, format_ref
from tests.helpers.cli_process import hyperdb_command, run, start_serving

pytestmark = pytest.mark.timeout(120)

SIZE = 300_000  # five chunks, the last one short


class Cli:
    """``hyperdb ARGS...`` in process: the exit code, stdout as bytes, stderr as text."""

    def __init__(self, capsys: pytest.CaptureFixture[bytes]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, bytes, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err.decode("utf-8")

    def ok(self, *args: str) -> bytes:
        code, out, err = self(*args)
        assert code == 0, (args, out, err)
        return out

    def fails(self, *args: str) -> str:
        got, out, err = self(*args)
        assert got == 1, (args, got, out, err)  # EXIT_ERROR: a HyperDBError
        assert err.startswith("hyperdb: error: ") and err.endswith("]\n"), err
        return err


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes]) -> Cli:
    return Cli(capsysbinary)


@pytest.fixture
def attached(cli: Cli, tmp_path: Path) -> tuple[str, bytes, str]:
    """A database ``db`` with ``files/photo`` referencing a 300 KB random file: (db path, the
    file's bytes, the blob's reference)."""
    db = str(tmp_path / "db")
    cli.ok("init", db)
    data = os.urandom(SIZE)
    (tmp_path / "photo.jpg").write_bytes(data)
    out = cli.ok("attach", db, "files/photo", str(tmp_path / "photo.jpg")).decode()
    ref = format_ref(blob_id_of(data))
    first, second = out.splitlines()
    assert first.startswith('attached files/photo = "photo.jpg" (')
    assert second == f"{ref} ({SIZE} bytes, 293.0 KiB)"
    return db, data, ref


def listed(cli: Cli, db: str) -> list[dict[str, Any]]:
    found = json.loads(cli.ok("blobs", db, "--json"))
    assert isinstance(found, list)
    return found


# --- attach and cat-blob --------------------------------------------------------------------------


def test_a_multi_chunk_file_reads_back_identical_by_key_by_ref_and_into_a_file(
    cli: Cli, attached: tuple[str, bytes, str], tmp_path: Path
) -> None:
    db, data, ref = attached
    assert SIZE > 4 * CHUNK_SIZE
    assert cli.ok("cat-blob", db, "files/photo") == data
    assert cli.ok("cat-blob", db, ref) == data
    assert cli.ok("cat-blob", db, "files/photo", "--output", str(tmp_path / "copy")) == b""
    assert (tmp_path / "copy").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "db", "photo.jpg"]
    with hyperdb.open(db, readonly=True) as opened:
        (node,) = opened.get("files/photo")
        assert node.value == b"photo.jpg"  # a binary database: the name's bytes
        assert node.blobs == (blob_id_of(data),)
        assert opened.get_blob("files/photo") == data


def test_attach_json_names_the_key_the_ref_and_the_node(cli: Cli, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    (tmp_path / "notes.txt").write_bytes(b"hello")
    code, out, err = cli("attach", db, "n", str(tmp_path / "notes.txt"), "--json", "--progress")
    assert code == 0 and err == ""  # --json: never a progress bar
    shown = json.loads(out)
    ref = blob_id_of(b"hello")
    assert shown["key"] == "n" and shown["ref"] == format_ref(ref) and shown["size"] == 5
    assert shown["node"]["value"] == "notes.txt"
    assert shown["node"]["blobs"] == [{"id": ref.id.hex(), "size": 5}]


def test_the_value_follows_the_database_encoding(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x00\x01")
    for encoding, given, expected in (
        ("json", [], "a.bin"),
        ("utf-8", ["--value", "a photo"], "a photo"),
        ("binary", ["--value", ""], b""),
    ):
        db = str(tmp_path / encoding)
        cli.ok("init", db, "--value-encoding", encoding)
        cli.ok("attach", db, "k", str(tmp_path / "a.bin"), *given)
        with hyperdb.open(db, readonly=True) as opened:
            (node,) = opened.get("k")
            assert node.value == expected, encoding
            assert opened.get_blob("k") == b"\x00\x01"


def test_an_empty_file_is_a_blob_too(cli: Cli, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    (tmp_path / "empty").write_bytes(b"")
    assert (
        cli.ok("attach", db, "e", str(tmp_path / "empty")).decode().endswith(":0 (0 bytes, 0 B)\n")
    )
    assert cli.ok("cat-blob", db, "e") == b""


# --- blobs ----------------------------------------------------------------------------------------


def test_blobs_lists_the_blob_with_its_fields(cli: Cli, attached: tuple[str, bytes, str]) -> None:
    db, _, ref = attached
    (entry,) = listed(cli, db)
    assert entry == {
        "ref": ref,
        "id": ref.split(":")[1],
        "size": SIZE,
        "held_bytes": SIZE,
        "complete": True,
        "references": 1,
        "status": "accepted",
        "wanted": False,
    }
    header, row, totals = cli.ok("blobs", db).decode().splitlines()
    assert header.split() == ["REF", "SIZE", "HELD", "COMPLETE", "REFS", "STATUS", "WANTED"]
    cells = [ref, "293.0", "KiB", "293.0", "KiB", "(100%)", "yes", "1", "accepted", "no"]
    assert row.split() == cells
    assert totals.startswith(f"1 blob(s), 1 complete; {SIZE} bytes held (293.0 KiB)")


def test_blobs_of_a_database_without_any(cli: Cli, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    assert listed(cli, db) == []
    code, out, err = cli("blobs", db)
    assert (code, out, err) == (0, b"", "(no blobs)\n")


# --- gc -------------------------------------------------------------------------------------------


def test_gc_after_overwriting_the_key_removes_the_blob_and_reports_the_bytes(
    cli: Cli, attached: tuple[str, bytes, str]
) -> None:
    db, _, ref = attached
    assert json.loads(cli.ok("gc", db, "--json")) == {"removed": 0, "bytes_freed": 0, "waiting": 0}
    cli.ok("put", db, "files/photo", "replaced")
    kept = cli.ok("gc", db).decode().splitlines()  # the default window (a day) has not passed
    assert kept[0] == "removed 0 blob(s), freed 0 bytes (0 B)"
    assert kept[1].startswith("1 unreferenced blob(s) kept until their retention window ends")
    assert cli.ok("cat-blob", db, ref)  # still held
    assert json.loads(cli.ok("gc", db, "--retention", "0", "--json")) == {
        "removed": 1,
        "bytes_freed": SIZE,
        "waiting": 0,
    }
    (entry,) = listed(cli, db)  # still referenced by the applied node that was overwritten
    assert (entry["held_bytes"], entry["complete"]) == (0, False)
    err = cli.fails("cat-blob", db, ref)
    assert f"blob {ref} is not held here and could not be fetched" in err
    assert "(reason: no connected peer; peers asked: none" in err
    assert err.endswith("[blob_unavailable]\n")
    assert (
        cli.ok("gc", db, "--retention", "0").decode() == "removed 0 blob(s), freed 0 bytes (0 B)\n"
    )
    assert cli.ok("verify", db).decode().endswith("ok\n")


def test_gc_of_a_blob_never_referenced(cli: Cli, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    with hyperdb.open(db) as opened:
        opened.put_blob(b"x" * 100_000)
    out = cli.ok("gc", db, "--retention", "0").decode()
    assert out == "removed 1 blob(s), freed 100000 bytes (97.7 KiB)\n"


# --- what cannot be read --------------------------------------------------------------------------


def test_cat_blob_of_a_blob_not_to_be_had_says_why_and_fails(
    cli: Cli, attached: tuple[str, bytes, str]
) -> None:
    db, _, _ = attached
    stranger = format_ref(BlobRef(bytes(range(32)), 5))
    err = cli.fails("cat-blob", db, stranger)
    assert "no node applied here references it" in err
    assert "(reason: not referenced; peers asked: none" in err
    cli.ok("put", db, "plain", "no blob here")
    err = cli.fails("cat-blob", db, "plain")
    assert err == (
        "hyperdb: error: cannot read the blob of plain: the value of 'plain' references no "
        "blob (reason: no blob) [blob_unavailable]\n"
    )
    err = cli.fails("cat-blob", db, "nothing/here")
    assert "(reason: no such key) [blob_unavailable]" in err


def test_cat_blob_refuses_a_terminal(
    cli: Cli, attached: tuple[str, bytes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _, _ = attached
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    err = cli.fails("cat-blob", db, "files/photo")
    assert "standard output is a terminal" in err and "[invalid_argument]" in err


# --- bad arguments --------------------------------------------------------------------------------


def test_bad_arguments_are_refused_with_their_reason_and_nothing_is_stored(
    cli: Cli, tmp_path: Path
) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    (tmp_path / "f").write_bytes(b"data")
    missing = str(tmp_path / "missing.bin")
    assert cli.fails("attach", db, "k", missing) == (
        f"hyperdb: error: cannot read {missing}: No such file or directory [invalid_argument]\n"
    )
    assert "it is a directory [invalid_argument]" in cli.fails("attach", db, "k", str(tmp_path))
    assert "[invalid_key]" in cli.fails("attach", db, "/", str(tmp_path / "f"))
    assert "give --value" in cli.fails("attach", db, "k", "-")
    nowhere = str(tmp_path / "nowhere")
    assert cli.fails("attach", nowhere, "k", str(tmp_path / "f")).endswith("[not_found]\n")
    assert cli.fails("cat-blob", nowhere, "k").endswith("[not_found]\n")
    for bad in ("blob:zz:1", "blob:" + "00" * 32, "blob:" + "AB" * 32 + ":1"):
        err = cli.fails("cat-blob", db, bad)
        assert err.startswith("hyperdb: error: not a blob ref (blob:<64 lowercase hex digits>")
        assert err.endswith("[invalid_argument]\n")
    assert "[invalid_key]" in cli.fails("cat-blob", db, "")
    assert "--timeout is a non-negative" in cli.fails("cat-blob", db, "k", "--timeout", "-1")
    assert "--retention is a non-negative" in cli.fails("gc", db, "--retention", "-5")
    assert "--retention is a non-negative" in cli.fails("gc", db, "--retention", "nan")
    with pytest.raises(SystemExit) as usage:
        main(["attach", db, "k"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as usage:
        main(["cat-blob", db, "k", "--timeout", "soon"])
    assert usage.value.code == 2
    assert listed(cli, db) == []
    with hyperdb.open(db, readonly=True) as opened:
        assert opened.get("k") == []


# --- progress -------------------------------------------------------------------------------------


def test_progress_is_drawn_on_stderr_when_asked(
    cli: Cli, attached: tuple[str, bytes, str], tmp_path: Path
) -> None:
    db, data, _ = attached
    (tmp_path / "other").write_bytes(data[::-1])
    code, _, err = cli("attach", db, "other", str(tmp_path / "other"), "--progress")
    assert code == 0
    assert err.startswith("\rattach [") and err.endswith("\n") and err.count("\n") == 1
    assert "100.0% 293.0 KiB of 293.0 KiB, " in err and "/s" in err
    code, out, err = cli("cat-blob", db, "other", "--progress")
    assert code == 0 and out == data[::-1]
    assert err.startswith("\rcat-blob [") and "100.0%" in err and err.endswith("/s\n")
    code, out, err = cli("cat-blob", db, "other", "--no-progress")
    assert (code, err) == (0, "")
    code, out, err = cli("cat-blob", db, "other")  # stderr is no terminal here
    assert (code, err) == (0, "")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_the_bar_redraws_at_most_ten_times_a_second_and_only_for_long_transfers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    stream = Lines()
    bar = blob_cli.ByteProgress(stream, "x", "auto")  # type: ignore[arg-type]
    for done in range(0, 100, 10):  # 100 updates in the first 0.45 s: nothing drawn
        clock.now += 0.045
        bar.update(done, 1000)
    assert stream.text == ""
    for done in range(100, 1000):  # 900 updates over 9 s: about 90 redraws
        clock.now += 0.01
        bar.update(done, 1000)
    assert 80 <= stream.text.count("\r") <= 91  # (float steps: some redraws 0.11 s apart)
    bar.update(1000, 1000)
    bar.update(1000, 1000)  # the end is drawn once
    drawn = stream.text.count("\r")
    bar.finish()
    assert stream.text.count("\r") == drawn and stream.text.endswith(" B/s\n")
    assert stream.text.rpartition("\r")[2].startswith(f"x [{'#' * 30}] 100.0% 1000 B of 1000 B, ")

    quick = Lines()
    bar = blob_cli.ByteProgress(quick, "x", "auto")  # type: ignore[arg-type]
    bar.update(1000, 1000)
    bar.finish()
    assert quick.text == ""  # done before it was worth showing
    shown = Lines()
    bar = blob_cli.ByteProgress(shown, "x", "always")  # type: ignore[arg-type]
    bar.finish()
    assert shown.text.startswith("\rx [") and shown.text.endswith("\n")


def test_sizes_for_people() -> None:
    assert [blob_cli.size_text(n) for n in (0, 1023, 1024, 1536 * 1024, 5 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 MiB",
        "5.0 TiB",
    ]


# --- memory ---------------------------------------------------------------------------------------


def test_a_blob_larger_than_the_memory_used_streams_in_and_out(cli: Cli, tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    cli.ok("init", db)
    size = 32 * 1024 * 1024
    with open(tmp_path / "big", "wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        cli.ok("attach", db, "big", str(tmp_path / "big"))
        _, attach_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        cli.ok("cat-blob", db, "big", "--output", str(tmp_path / "copy"))
        _, cat_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # about 9 MiB and 4 MiB whatever the size (16 MiB or 48 MiB alike): transactions of 64
    # chunks in, reads of 1 MiB out
    assert attach_peak < 12 * 1024 * 1024, attach_peak
    assert cat_peak < 6 * 1024 * 1024, cat_peak
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "big").read_bytes()


# --- as users run it ------------------------------------------------------------------------------


def check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


@pytest.mark.integration
def test_through_real_pipes(tmp_path: Path) -> None:
    check(run("init", "db", cwd=tmp_path))
    data = os.urandom(SIZE)
    attached = subprocess.run(
        [*hyperdb_command(), "attach", "db", "piped", "-", "--value", "from stdin"],
        cwd=tmp_path,
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.decode().splitlines()[1].startswith(format_ref(blob_id_of(data)))
    with open(tmp_path / "out", "wb") as out:  # hyperdb cat-blob db piped > out
        read = subprocess.run(
            [*hyperdb_command(), "cat-blob", "db", "piped"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert read.returncode == 0 and read.stderr == b""
    assert (tmp_path / "out").read_bytes() == data
    gone = run("cat-blob", "db", format_ref(BlobRef(bytes(32), 1)), cwd=tmp_path)
    assert gone.returncode == 1 and "(reason: not referenced;" in gone.stderr


@pytest.mark.integration
def test_attach_and_gc_go_through_the_serving_process(tmp_path: Path) -> None:
    """While ``serve`` holds the database, attach and gc are done by it (its control socket),
    reads work beside it, and only ``attach -`` (standard input cannot be passed on) refuses.
    Mutation tried: the server leaving out gc's report (caught: gc failed)."""
    check(run("init", "db", cwd=tmp_path))
    data = os.urandom(SIZE)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "g").write_bytes(data[::-1])
    check(run("attach", "db", "k", "f", cwd=tmp_path))
    server, _ = start_serving("db", tmp_path)
    try:
        attached = json.loads(check(run("attach", "db", "k2", "g", "--json", cwd=tmp_path)))
        assert attached["size"] == SIZE and attached["node"]["key"] == "k2"
        refused = subprocess.run(
            [*hyperdb_command(), "attach", "db", "k3", "-", "--value", "x"],
            cwd=tmp_path,
            input="data",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 1 and refused.stderr.endswith("[in_use]\n"), refused
        listing = json.loads(check(run("blobs", "db", "--json", cwd=tmp_path)))
        assert [entry["complete"] for entry in listing] == [True, True]
        with open(tmp_path / "out", "wb") as out:
            read = subprocess.run(
                [*hyperdb_command(), "cat-blob", "db", "k2"], cwd=tmp_path, stdout=out, timeout=120
            )
        assert read.returncode == 0 and (tmp_path / "out").read_bytes() == data[::-1]
        check(run("put", "db", "k", "plain now", cwd=tmp_path))
        report = json.loads(check(run("gc", "db", "--retention", "0", "--json", cwd=tmp_path)))
        assert report == {"removed": 1, "bytes_freed": SIZE, "waiting": 0}
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
