"""`python -m tfggm`: the `tfggm` command of the MNIST application."""

import sys

from tfggm.mnist.cli import main

sys.exit(main())
