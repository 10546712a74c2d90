"""``python -m minirlhf``: see minirlhf.cli."""

import sys

from minirlhf.cli import main

sys.exit(main())
