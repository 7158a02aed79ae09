"""``python -m ckptname``: the same as the ``ckptname`` command."""

import sys

from .cli import main

sys.exit(main())
