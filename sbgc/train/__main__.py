"""``python -m sbgc.train``: train, export, pack or unpack the score model (see :mod:`sbgc.train.score`)."""

import sys

from sbgc.train.score import main

sys.exit(main())
