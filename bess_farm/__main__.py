from bess_farm.interfaces.cli import main

raise SystemExit(main())
