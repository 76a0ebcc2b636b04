"""What the tests share: each module here is imported by the test modules that need it, and no
test module imports another (``tests/test_suite_shape.py`` checks both).

- :mod:`~tests.helpers.storage_dump`: every row of a storage, to compare before and after.
- :mod:`~tests.helpers.memory_sync`: two in-memory replicas brought up to date with each other.
- :mod:`~tests.helpers.errors`: ``raises_code``, ``pytest.raises`` by an error's stable code.
- :mod:`~tests.helpers.cli_process`: the installed ``hyperdb`` command, run in a subprocess.
- :mod:`~tests.helpers.evil_peer`: a hostile replication peer over a real loopback socket.
- :mod:`~tests.helpers.replica_process`: a script, a replica serving and syncing in its own process.
- :mod:`~tests.helpers.trie_world`: an in-memory multi-writer world on the trie package and its
  causal model, with the random histories that drive it.
- :mod:`~tests.helpers.trie_reference`: ``prepare_put`` transcribed from the spec, and adversarial
  forests of hand-made tables to compare against it.
- :mod:`~tests.helpers.gc_untracked`: asserting a trie table costs the cyclic GC nothing.
- :mod:`~tests.helpers.oracle_reference`: the reference hyperdb (Node) behind the differential test:
  finding, installing and running it, generating scenarios.
- :mod:`~tests.helpers.oracle_adapter`: the same scenarios run through this implementation.

Tests import them as ``tests.helpers.<module>``: run pytest from the repository's root as
``python -m pytest`` (the command README gives), which puts the root on ``sys.path``.
"""
