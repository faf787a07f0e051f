"""``python -m adabelief_reference.generate``: write or check the golden vectors."""

from __future__ import annotations

import sys

from ._generate import main

if __name__ == "__main__":
    sys.exit(main())
