"""Skiff's shared library: the API machinery, the client, and what every daemon reuses.

Imports run one way: ``skiff.api`` (pure) <- ``skiff.client`` <- ``services.*``.
"""

__version__ = "0.1.0"
