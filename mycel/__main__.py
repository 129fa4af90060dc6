from mycel.cli.main import main

raise SystemExit(main())
