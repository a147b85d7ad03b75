"""Moved to `zesty.bench.loadgen` (`python -m zesty.bench.loadgen --help`); kept for old commands."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from zesty.bench.loadgen import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
