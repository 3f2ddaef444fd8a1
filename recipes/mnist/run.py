#!/usr/bin/env python
"""Run the MNIST distillation recipe: ``python recipes/mnist/run.py --preset main --seed 0``.

Every trained model is saved (atomically) under ``<out_dir>/seed<N>/`` and
skipped when present, so rerunning the same command resumes. Results go to
``<out_dir>/results.json``; ``--report`` rebuilds the tables and the plot.

Examples
--------
    python recipes/mnist/run.py --preset smoke                 # < 60 s
    python recipes/mnist/run.py --preset main --seed 0         # the main table, one seed
    python recipes/mnist/run.py --preset full --seed 0         # + sweep, omit3, only78
    python recipes/mnist/run.py --preset main --set student.epochs=10 --data-dir /path/to/mnist
    python recipes/mnist/run.py --report                       # RESULTS tables + plot
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asr_kd.image.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
