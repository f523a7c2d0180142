import sys

from rankrun.cli.main import main

sys.exit(main())
