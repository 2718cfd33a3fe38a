"""``python -m medclass`` runs the command line."""

from __future__ import annotations

import sys

from medclass.cli import main

sys.exit(main())
