"""``python -m tests.soak --minutes N``: the churn soak (see :mod:`tests.soak.churn`)."""

from tests.soak.churn import main

raise SystemExit(main())
