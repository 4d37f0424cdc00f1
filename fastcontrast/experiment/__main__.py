"""`python -m fastcontrast.experiment`."""
from . import main

raise SystemExit(main())
