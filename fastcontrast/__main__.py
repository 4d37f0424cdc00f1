"""`python -m fastcontrast`: the `fastcontrast` command."""
from .cli import main

raise SystemExit(main())
