"""Child process of the preemption test: the training app with a SIGUSR2 handler installed first, the way
submitit installs its checkpoint-and-requeue handler. The handler records whether the training loop had
saved its checkpoint before handing the signal on.

    python tests/train_signal_child.py MARKER_FILE APP_OVERRIDES...   (one override must be hydra.run.dir=...)
"""

import signal
import sys
from pathlib import Path

marker = Path(sys.argv[1])
overrides = sys.argv[2:]
run_dir = Path(next(item for item in overrides if item.startswith("hydra.run.dir=")).partition("=")[2])


def requeue_handler(signum, frame):
    marker.write_text(f"checkpoint present: {any((run_dir / 'checkpoints').glob('step-*/meta.json'))}")


signal.signal(signal.SIGUSR2, requeue_handler)
sys.argv = ["sweeps.train", *overrides]

from sweeps.train import main  # noqa: E402  (the handler must be installed before training starts

main()
