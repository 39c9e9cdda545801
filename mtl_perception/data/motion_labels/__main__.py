"""python -m mtl_perception.data.motion_labels: the make_motion_labels command."""

import sys

from .cli import main

sys.exit(main())
