"""Omnia: run AI agents in production on Kubernetes.

The package is layered by dependency direction: pure building blocks
(``config``, ``protocol``, ``agent``, ``sessions``, ``providers``) know nothing
of the processes that host them (``runtime``, ``facade``, ``operator``) or of
the command line (``cli``).
"""

__version__ = "0.1.0"
