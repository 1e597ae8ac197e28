"""selfheal: durable auto-remediation on Temporal.

The distribution installs this one import package; the rooms of the repository (``domain/``,
``workflows/``, ``activities/``, ...) are its subpackages (``selfheal.domain``, ...), mapped with
setuptools' ``package-dir``. In a checkout, the entries of this folder are links to those rooms,
so that ``import selfheal.workflows`` works from the source tree as it does once installed.

Nothing here may do I/O: the workflow sandbox imports this package for every workflow run.
"""

__version__ = "0.1.0"
