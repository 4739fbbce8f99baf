"""``python -m distgan COMMAND ...``: the ``distgan`` console command without an installed script."""
import sys

from distgan.cli import main

sys.exit(main())
