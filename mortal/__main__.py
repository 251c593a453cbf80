"""``python -m mortal`` runs the command line."""

from mortal.cli import main

raise SystemExit(main())
