"""``python -m pyllmcodec``: the same as the ``pyllmcodec`` command."""

import sys

from pyllmcodec.cli import main

sys.exit(main())
