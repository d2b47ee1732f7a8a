"""``python -m imageshelf_client``: the ``imageshelf`` command."""

import sys

from .cli import main

sys.exit(main())
