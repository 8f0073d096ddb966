import sys

from meshflow.cli import main

sys.exit(main())
