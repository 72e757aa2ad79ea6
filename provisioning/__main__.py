"""`python -m provisioning`: the same as `powabot provision`."""

import sys

from provisioning.cli import main

sys.exit(main())
