from hybridmednet.cli.main import main

raise SystemExit(main())
