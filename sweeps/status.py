"""`python -m sweeps.status SWEEP_DIR`: one line per cell (pending, running, done, failed with the last
error line, or blocked by a failed stage 1; its stage in a two-stage grid; attempts so far, and how many
failed) and a count of each state."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from parscale_law.arguments import CommandParser
from parscale_law.errors import exits_on
from sweeps.grid.cells import STATES, check_sweep_dir, sweep_cells


def format_cells(cells) -> str:
    now = time.time()
    lines = []
    for cell in cells:
        parts = [f"{cell.name:<28} {cell.state:<8}"]
        if cell.stage:
            parts.append(f"stage {cell.stage}")
        if cell.step is not None:
            parts.append(f"step {cell.step}" + (f"/{cell.total_steps}" if cell.total_steps else ""))
        if cell.loss is not None:
            parts.append(f"loss {cell.loss:.4f}")
        if cell.state == "running" and cell.updated is not None:
            parts.append(f"last step {now - cell.updated:.0f} s ago")
        if cell.attempts:
            parts.append(f"attempts {cell.attempts}" + (f" ({cell.failures} failed)" if cell.failures else ""))
        if cell.detail:
            parts.append(cell.detail)
        lines.append("  ".join(parts))
    counts = Counter(cell.state for cell in cells)
    lines.append(", ".join(f"{counts.get(state, 0)} {state}" for state in STATES))
    return "\n".join(lines)


@exits_on(ValueError)
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m sweeps.status", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    print(format_cells(sweep_cells(check_sweep_dir(args.sweep_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
