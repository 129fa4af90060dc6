"""``python -m mycel``: the ``mycel`` command (see ``python -m mycel --help``)."""

from mycel.cli.main import main

raise SystemExit(main())
