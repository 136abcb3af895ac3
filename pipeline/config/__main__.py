"""python -m pipeline.config [RECIPE [section.field=value ...]]"""

import sys

from pipeline.config.reference import main

if __name__ == "__main__":
    sys.exit(main())
