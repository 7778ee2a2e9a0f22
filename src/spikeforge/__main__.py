"""``python -m spikeforge`` is the ``spikeforge`` command (also under ``torchrun -m spikeforge``)."""
import sys

from spikeforge.train.cli import main

sys.exit(main())
