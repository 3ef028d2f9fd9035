"""``skiffctl``: kubectl's habits against a Skiff apiserver.

One module per command group, each with ``add_parsers(subparsers, common)`` and async
commands taking a :class:`~skiff.cli.skiffctl.common.Context`:

- ``apply.py`` (apply, create), ``get.py`` (get, get -w), ``describe.py``,
  ``delete.py``, ``edit_ops.py`` (scale, label, annotate), ``nodes.py`` (cordon,
  uncordon, drain), ``rollout.py`` (status, history, undo, restart, pause, resume),
  ``version.py``;
- ``printers.py`` (pure: ages, pod status, tables, ``-o`` forms), ``merge.py`` (pure:
  apply's three-way merge), ``config.py`` (which server), ``common.py`` (the context,
  kind and name arguments, kubectl's error words);
- ``main.py`` wires them into argparse and turns expected failures into one line on
  stderr and exit status 1, never a traceback.
"""

import os

# gRPC's C core would otherwise print its own warnings on a CLI's stderr.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
