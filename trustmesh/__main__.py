import sys

from trustmesh.cli import main

sys.exit(main())
