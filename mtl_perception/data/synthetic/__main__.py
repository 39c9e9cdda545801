"""``python -m mtl_perception.data.synthetic``: the ``make_synthetic_cityscapes`` command."""

import sys

from .cli import main

sys.exit(main())
