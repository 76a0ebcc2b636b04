"""Build script for the optional C accelerator (the rest of the project is in pyproject.toml).

``trie._chain`` compiles the chain walk of a single-writer put and the one-pass check of a
received node's trie table. It is optional: where it cannot be built (no C compiler),
installation goes on and ``trie.put`` and ``trie.table`` run the same loops in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trie._chain", ["trie/_chain.c"], optional=True)])
