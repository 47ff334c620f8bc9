import sys

from st_hpo.cli import console_main

sys.exit(console_main())
