"""Replication between replicas: the message format and framing (``wire``), the sans-I/O
session state machine (``connection``) and the port it talks to (``port``), the encrypted channel
(``secure``), a session over that channel (``session``), and the asyncio TCP transport (``net``,
the only module with sockets). ``spec/protocol.md`` is the normative text."""
