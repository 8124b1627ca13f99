import sys

from ghostnet_edge.cli import main

sys.exit(main())
