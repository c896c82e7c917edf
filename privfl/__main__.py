"""``python -m privfl`` is the ``privfl`` command."""

from privfl.cli import main

raise SystemExit(main())
