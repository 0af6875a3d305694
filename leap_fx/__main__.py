"""``python -m leap_fx``: the ``leap-fx`` command line."""
import sys

from leap_fx.cli import main

sys.exit(main())
