"""Entry point from a checkout: `python search/run.py --help` (installed: `petl-search`). Logic: search/cli.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout without `pip install -e .`

from search.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
