import sys

from rankrun.cli import main

sys.exit(main())
