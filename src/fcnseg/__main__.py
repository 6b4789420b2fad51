"""``python -m fcnseg`` (what ``torchrun -m fcnseg train ...`` runs)."""

import sys

from fcnseg.cli import main

sys.exit(main())
