"""Tools over a database: checking a whole store without trusting it (``fsck``) and inspecting
its history as a causal graph (``inspect``, on networkx)."""
