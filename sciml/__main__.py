"""``python -m sciml`` is the ``sciml`` command."""

import sys

from sciml.cli import main

sys.exit(main())
