"""The database model over the feeds: the records a writer appends (``record``), the nodes they
decode to (``node``), value encodings (``values``), what is known of the writers (``state``), the
derived key-order index (``index``), checking and applying replicated nodes (``apply``), reading
nodes (``reader``), the write path (``writer``) and the database's side of replication
(``replica``). No public API and no network here: ``hyperdb.api`` is built on this."""
