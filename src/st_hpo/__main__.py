import sys

from st_hpo.cli import main

sys.exit(main())
