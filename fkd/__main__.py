"""`python -m fkd ...` is the `fkd` console script."""
import sys

from .cli import main

sys.exit(main())
