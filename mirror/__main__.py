"""`python -m mirror` is the same program as the `mirror` command."""

from mirror.cli import main

raise SystemExit(main())
