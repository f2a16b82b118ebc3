"""Files a restart trusts, written whole or not at all.

Every small file a restart reads (config.yaml, result.json, a manifest, the exported model) is written to a
temporary name in the same directory and moved into place with os.replace, so a crash leaves either the old
file or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def replace_directory(temporary: Path, final: Path) -> None:
    """Moves a fully written directory into place (a leftover from an interrupted attempt is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
