"""What a writer wrote cannot drive the reader's terminal: every human-readable output of the
``hyperdb`` command shows keys and values through :func:`hyperdb.cli.common.printable` (controls,
format characters and odd spaces escaped, backslashes doubled, the combining marks of a non-NFC
key shown), so a key holding ``ESC [31m``, a right-to-left override or a C1 ``CSI`` prints as
text; ``--json`` output stays exact.

Keys are not Unicode-normalized (spec/trie.md 1.1): ``"e\\u0301"`` (NFD) and ``"\\u00e9"`` (NFC)
are two keys, and the command shows them differently.

The commands run in process through :func:`hyperdb.cli.main`, on a database written through the
API: two replicas that wrote the same hostile key concurrently (so ``conflicts`` has something to
show), then every hostile key with a hostile value.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import networkx as nx  # type: ignore[import-untyped]
import pytest

import hyperdb
from hyperdb.cli import main
from hyperdb.cli.common import printable, show_value
from hyperdb.cli.demo import run_demo
from hyperdb.tools import inspect

ESC = "a\x1b[31mb"  # an ANSI colour sequence
RLO = "\u202eevil"  # right-to-left override: reverses what follows on screen
CSI = "x\x9b2J"  # C1 control sequence introducer: "clear the screen" on some terminals
NFD = "e\u0301"  # e + combining acute accent
NFC = "\u00e9"  # precomposed e with acute accent: looks the same as NFD
SPOOF = "a\\x1b[31mb"  # a literal backslash-x: must not look like the escaped ESC
OTHERS = ("nl\nkey", "zw\u200bsp", "nb\u00a0sp", "ls\u2028x", "tab\tkey")
KEYS = (ESC, RLO, CSI, NFD, NFC, SPOOF, *OTHERS)
CONFLICT = "c\x1b[2J"  # written by two writers concurrently


def value_of(key: str) -> str:
    return "v:" + key


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("escape")
    with hyperdb.open(root / "db") as a, hyperdb.open(root / "other", key=a.key) as b:
        a.authorize(b.local_key)
        hyperdb.replicate(a, b)
        a.put(CONFLICT, RLO.encode())  # concurrent with b's write of the same key: a conflict
        b.put(CONFLICT, CSI.encode())
        hyperdb.replicate(a, b)
        a.put("plain", b"1")
        for key in KEYS:
            a.put(key, value_of(key).encode())
        a.put(RLO, b"\xffbinary")  # a hex value, and the head: shown by `heads`
        a.delete(CSI)
        a.put(CSI, ("ctl" + CSI + ESC + RLO + NFD).encode())
    return root / "db"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_safe(text: str) -> None:
    """Nothing a terminal acts on, and no combining mark of the NFD key left raw."""
    raw = sorted({c for c in text if c != "\n" and not c.isprintable()})
    assert not raw, f"raw {[unicodedata.name(c, hex(ord(c))) for c in raw]} in {text!r}"
    assert "\u0301" not in text, text


HUMAN = [
    ["ls"],
    ["ls", "", "--no-recursive"],
    ["range"],
    ["range", "--gte", "a", "--reverse"],
    ["heads"],
    ["diff", "empty"],
    ["history"],
    ["history", "--reverse"],
    ["history", "--graph"],
    ["blame"],
    ["conflicts"],
    ["graph"],
    ["writers"],
    ["version"],
]


@pytest.mark.parametrize("argv", HUMAN, ids=" ".join)
def test_human_output_escapes_keys_and_values(
    store: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Mutation tried: printing ``node.key`` instead of ``printable(node.key)`` in ``_listing``
    and in ``describe_write``, and ``json.dumps`` without the escapes in ``show_value`` (caught:
    raw ESC, U+202E and U+009B on stdout)."""
    code, out, err = cli(capsys, argv[0], str(store), *argv[1:])
    assert code == 0, err
    assert_safe(out)
    assert_safe(err)


@pytest.mark.parametrize("command", ["ls", "range", "blame", "diff", "history", "graph"])
def test_nfc_and_nfd_keys_print_differently(
    store: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [command, str(store)] + (["empty"] if command == "diff" else [])
    if command == "history":
        argv.append("--graph")
    out = cli(capsys, *argv)[1]
    assert printable(NFD) == "e\\u0301" and printable(NFC) == NFC
    if command == "graph":  # DOT text: a label's backslashes are doubled by DOT quoting
        assert "e\\\\u0301\\n" in out and f"{NFC}\\n" in out
        return
    assert "e\\u0301 " in out and f"{NFC} " in out
    # the literal backslash key and the escaped ESC key are told apart too
    assert "a\\x1b[31mb " in out and "a\\\\x1b[31mb " in out


def test_ls_shows_every_key_once_escaped(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = cli(capsys, "ls", str(store))[1].splitlines()
    shown = [line.split(" = ")[0] for line in lines]
    assert sorted(shown) == sorted([printable(k) for k in (*KEYS, CONFLICT)] + ["plain"])
    assert len(set(shown)) == len(shown)  # no two keys look alike
    assert (
        f"{printable(NFD)} = {show_value(value_of(NFD).encode())} ("
        in lines[shown.index("e\\u0301")]
    )


@pytest.mark.parametrize("key", KEYS)
def test_get_escapes_the_key_and_its_value(
    store: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    code, out, err = cli(capsys, "get", str(store), key)
    assert code == 0, err
    assert_safe(out)
    assert out.startswith(printable(key) + " ")


def test_get_of_a_missing_hostile_key_escapes_it_in_the_error(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "get", str(store), "missing\x1b]0;pwned\x07" + NFD)
    assert code == 1 and out == ""
    assert_safe(err)
    assert 'no value for key "missing\\x1b]0;pwned\\x07e\\u0301"' in err, err


def test_a_conflict_on_a_hostile_key_is_escaped(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mutation tried: the conflict headers of ``get`` and ``conflicts`` printing the raw key
    (caught)."""
    code, out, _ = cli(capsys, "conflicts", str(store))
    assert code == 0
    assert_safe(out)
    assert out.startswith("c\\x1b[2J: 2 concurrent values\n")
    code, out, _ = cli(capsys, "get", str(store), CONFLICT)
    assert code == 0
    assert_safe(out)
    assert out.startswith("c\\x1b[2J: 2 concurrent values (a conflict)\n")
    assert '"\\u202eevil"' in out and '"x\\u009b2J"' in out


JSON = [
    ["ls", "--json"],
    ["range", "--json"],
    ["diff", "empty", "--json"],
    ["history", "--json"],
    ["blame", "--json"],
    ["conflicts", "--json"],
]


@pytest.mark.parametrize("argv", JSON, ids=" ".join)
def test_json_output_stays_exact(
    store: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Mutation tried: passing keys through ``printable`` in ``node_json`` (caught: the keys read
    back differ, and the raw U+202E is gone from the bytes)."""
    code, out, err = cli(capsys, argv[0], str(store), *argv[1:])
    assert code == 0, err
    rows = [json.loads(line) for line in out.split("\n")[:-1]]  # not splitlines: U+2028 is data
    keys = {row["key"] for row in rows}
    for row in rows:  # the nodes of a key carry that same key, exactly
        nodes = [v for part in ("values", "now", "then", "base") for v in row.get(part, [])]
        assert all(node["key"] == row["key"] for node in nodes)
    values = {
        v["value"]
        for row in rows
        for v in row.get("values", row.get("now", [row]))
        if isinstance(v["value"], str)
    }
    if argv[0] in ("ls", "range", "diff", "blame"):
        assert keys >= set(KEYS)
        assert {value_of(k) for k in KEYS if k not in (RLO, CSI)} <= values
    if argv[0] == "conflicts":
        assert keys == {CONFLICT}
    if argv[0] == "history":
        assert set(KEYS) <= keys
    for key in KEYS:  # the exact JSON spelling of every key, not an escaped one
        if argv[0] != "conflicts":
            assert json.dumps(key, ensure_ascii=False) in out
    assert "\u202e" in out and "\x9b" in out  # JSON leaves them as they are


def test_get_json_is_exact(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for key in KEYS:
        code, out, _ = cli(capsys, "get", str(store), key, "--json")
        assert code == 0
        record = json.loads(out)
        assert record["key"] == key
        assert record["values"][0]["key"] == key
        assert out.startswith('{"key": ' + json.dumps(key, ensure_ascii=False) + ", ")
    code, out, _ = cli(capsys, "get", str(store), CSI, "--json")
    assert json.loads(out)["values"][0]["value"] == "ctl" + CSI + ESC + RLO + NFD


def test_heads_json_is_exact(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli(capsys, "heads", str(store), "--json")[1]
    [head] = json.loads(out)
    assert head["key"] == CSI and head["value"] == "ctl" + CSI + ESC + RLO + NFD


def test_put_and_del_echo_the_key_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hyperdb.open(tmp_path / "db").close()
    for key in KEYS:
        code, out, err = cli(capsys, "put", str(tmp_path / "db"), key, value_of(key))
        assert code == 0, err
        assert_safe(out)
        assert out.startswith(f"put {printable(key)} (")
        code, out, err = cli(capsys, "del", str(tmp_path / "db"), key)
        assert code == 0, err
        assert_safe(out)
        assert out.startswith(f"deleted {printable(key)} (")
    code, out, _ = cli(capsys, "history", str(tmp_path / "db"))
    assert_safe(out)
    assert f"del {printable(ESC)}\n" in out
    assert f"put {printable(RLO)} = {show_value(value_of(RLO).encode())}\n" in out


@pytest.mark.parametrize("key", ["", "/", "//"])
def test_get_of_the_empty_key_says_what_is_wrong(
    store: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """``hyperdb get DB ""`` once said "error: : no value". The empty key (and every key made
    only of slashes, which normalizes to it) is the root of every path: put and del refuse it
    with ``invalid_key``, and get says the same, in both output modes."""
    for extra in ([], ["--json"]):
        code, out, err = cli(capsys, "get", str(store), key, *extra)
        assert code == 1 and out == ""
        assert err.startswith(f'hyperdb: error: "{key}" is the empty key'), err
        assert err.endswith("[invalid_key]\n")
    code, out, err = cli(capsys, "put", str(store), key, "x")
    assert code == 1 and "[invalid_key]" in err


def test_nfc_and_nfd_spellings_are_two_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys are exact strings (spec/trie.md 1.1): no Unicode normalization. Mutation tried:
    NFC-normalizing in ``check_key`` (caught: one key listed, holding the second value)."""
    with hyperdb.open(tmp_path / "db") as db:
        db.put(NFD, b"decomposed")
        db.put(NFC, b"composed")
        assert [n.value for n in db.get(NFD)] == [b"decomposed"]
        assert [n.value for n in db.get(NFC)] == [b"composed"]
        assert sorted(key for key, _ in db.list()) == sorted([NFD, NFC])
    lines = cli(capsys, "ls", str(tmp_path / "db"))[1].splitlines()
    shown = sorted(line.split(" (")[0] for line in lines)
    assert shown == sorted(['e\\u0301 = "decomposed"', '\u00e9 = "composed"'])


# --- printable and show_value themselves ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("users/alice", "users/alice"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),  # NFC text and CJK: unchanged
        (ESC, "a\\x1b[31mb"),
        (SPOOF, "a\\\\x1b[31mb"),
        (RLO, "\\u202eevil"),
        (CSI, "x\\x9b2J"),
        (NFD, "e\\u0301"),
        ("nb\u00a0sp", "nb\\xa0sp"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("del\x7f", "del\\x7f"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_maps_back_to_one_string() -> None:
    """Different strings never look the same. Mutation tried: not doubling backslashes (caught:
    ESC and SPOOF shown alike)."""
    shown = [printable(k) for k in KEYS]
    assert len(set(shown)) == len(KEYS)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"plain", '"plain"'),
        (b"line\nbreak", '"line\\nbreak"'),
        (RLO.encode(), '"\\u202eevil"'),
        (CSI.encode(), '"x\\u009b2J"'),
        (ESC.encode(), '"a\\u001b[31mb"'),
        (NFD.encode(), '"e\\u0301"'),
        (NFC.encode(), '"\u00e9"'),
        ("\U000e0041".encode(), '"\\udb40\\udc41"'),
        (b"\xff", "0xff"),
        ({"k": RLO}, '{"k": "\\u202eevil"}'),
        (None, "<deleted>"),
    ],
)
def test_show_value_is_a_safe_json_string(value: object, shown: str) -> None:
    """A text value is shown as a JSON string whose every character a terminal would act on is
    a ``\\u`` escape, so it still reads back to the exact value. Mutation tried: plain
    ``json.dumps`` (caught: raw U+202E and U+009B)."""
    assert show_value(value) == shown
    if isinstance(value, bytes) and shown.startswith('"'):
        assert json.loads(shown) == value.decode()


# --- the graph ------------------------------------------------------------------------------------


def test_draw_escapes_keys_and_values_by_itself(store: Path) -> None:
    """``inspect.draw`` is a library function too: its lines are safe without the CLI, and show
    keys and values as ``printable`` and ``show_value`` do (both use ``hyperdb.tools.text``).
    Mutation tried: the old ``_printable`` of inspect
    (``\\x`` for every non-printable character, backslashes and NFD marks kept; caught)."""
    with hyperdb.open(store, readonly=True) as db:
        lines = inspect.draw(db)
        dot = inspect.to_dot(inspect.causal_graph(db))
    text = "\n".join(lines)
    assert_safe(text)
    assert_safe(dot)
    for key in KEYS:  # the same rules as the rest of the command line
        assert f" put {printable(key)} {show_value(value_of(key).encode())}\n" in text + "\n"


def test_graphml_reads_back_with_control_characters_in_keys(tmp_path: Path) -> None:
    """XML 1.0 cannot hold most C0 controls: a key with ESC once made a GraphML file that
    networkx itself could not read back. They are written escaped; every other key exactly."""
    with hyperdb.open(tmp_path / "db") as db:
        for key in KEYS:
            db.put(key, value_of(key).encode())
        graph = inspect.causal_graph(db)
    inspect.write_graphml(graph, tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    keys = {str(attrs["key"]) for _, attrs in back.nodes(data=True)}
    assert {RLO, CSI, NFD, NFC, SPOOF, "zw\u200bsp", "nb\u00a0sp", "tab\tkey"} <= keys
    assert printable(ESC) in keys
    assert {str(attrs["key"]) for _, attrs in graph.nodes(data=True)} >= set(KEYS)  # unchanged


# --- the demo -------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_demo_escapes_what_a_replica_already_held(tmp_path: Path) -> None:
    """The demo reopens existing replicas: a title some writer left there earlier is shown in
    the key's history, escaped."""
    with hyperdb.open(tmp_path / "alice") as alice:
        alice.put("doc/title", ("\x1b[2J" + RLO + CSI).encode())
    lines: list[str] = []
    assert run_demo(tmp_path, 2, say=lines.append) == 0
    text = "\n".join(lines)
    assert_safe(text)
    assert '"\\u001b[2J\\u202eevil' in text


def test_error_lines_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error's message can hold a peer's words (the reason it gave for ending a session) or
    a path: the error line escapes them. Mutation tried: printing ``str(exc)`` as it was
    (caught: the raw ESC reached stderr)."""
    monkeypatch.chdir(tmp_path)
    assert main(["info", "x\x1b[2Jy\u202e"]) == 1
    err = capsys.readouterr().err
    assert_safe(err)
    assert "x\\x1b[2Jy\\u202e" in err and err.endswith("[not_found]\n")
