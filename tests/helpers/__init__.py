"""What the tests share. A test module imports what it needs from here, and never another test
module or ``conftest.py`` (``tests/test_suite_shape.py`` checks it): code two test modules need is
moved into a module of this package, named for what it holds, with a docstring saying so.

Tests import these modules as ``tests.helpers.<module>``: pytest is run from the repository's root
as ``python -m pytest`` (the command README gives), which puts the root on ``sys.path``.
"""
