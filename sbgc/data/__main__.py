"""``python -m sbgc.data``: see :mod:`sbgc.data.cli`."""

import sys

from sbgc.data.cli import main

sys.exit(main())
