"""What every benchmark's ``main`` does around its run: stop cleanly on SIGTERM, and
print the JSON report (also writing it to ``--output`` when given)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, which unwinds through every ``finally``:
    the daemons a benchmark started are stopped."""

    def terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)


def emit(report: dict[str, Any], output: Path | None) -> None:
    """Print ``report`` as JSON on stdout, and write it to ``output`` too if given."""
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
