"""``python -m skiff.cli.skiffctl``: the same as the ``skiffctl`` console script."""

from skiff.cli.skiffctl.main import main

raise SystemExit(main())
