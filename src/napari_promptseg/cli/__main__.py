"""`python -m napari_promptseg.cli` = `promptseg`."""

import sys

from . import main

sys.exit(main())
