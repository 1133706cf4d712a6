"""``python -m hetpart ...``: the ``partition`` command, for a checkout that is not installed.

Same arguments and exit status as ``partition`` (:func:`hetpart.cli.main.main`).
"""

import sys

from .cli.main import main

sys.exit(main())
