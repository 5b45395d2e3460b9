"""``python -m fcam_plugin`` runs the ``fcam`` command line."""

from .cli import main

raise SystemExit(main())
