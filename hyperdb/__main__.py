"""``python -m hyperdb``: the same as the ``hyperdb`` command."""

from hyperdb.cli import main

raise SystemExit(main())
