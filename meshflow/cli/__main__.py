"""``python -m meshflow.cli``: the ``meshflow`` command."""

import sys

from meshflow.cli import main

sys.exit(main())
