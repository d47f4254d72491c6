"""``python -m ldm3d_training`` (and ``torchrun -m ldm3d_training``) = the ``ldm3d-train`` command."""

import sys

from .cli import main

sys.exit(main())
