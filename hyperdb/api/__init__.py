"""The public API: :class:`~hyperdb.api.database.Database` and :func:`open` (``database``),
read-only views as of fixed heads (``snapshot``), and the checks of callers' arguments. Each verb
is a short delegation to the parts in ``hyperdb.model``."""
