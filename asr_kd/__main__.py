"""``python -m asr_kd`` is the ``asr-kd`` command."""

import sys

from asr_kd.cli import main

sys.exit(main())
