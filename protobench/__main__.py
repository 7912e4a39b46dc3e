"""``python -m protobench``: the command line (the same as the ``protobench`` script)."""

import sys

from protobench.benchmarks.cli import main

sys.exit(main())
