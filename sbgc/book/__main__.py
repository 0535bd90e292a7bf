"""``python -m sbgc.book``: run the notebooks at a profile and build the book (see :mod:`sbgc.book.runner`)."""

import sys

from sbgc.book.runner import main

sys.exit(main())
