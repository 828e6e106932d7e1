"""Files only this user may read: the data directory (callers' phone numbers in the ledger,
the Redis AOF) is 0700, the files in it 0600."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if missing and make it 0700; its files become 0600."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(folder, DIR_MODE)
    for child in folder.iterdir():
        if child.is_file() and not child.is_symlink():
            with contextlib.suppress(OSError):  # another process's file may vanish meanwhile
                os.chmod(child, FILE_MODE)
    return folder


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty if missing; make it 0600 (its folder is left as it is)."""
    file = Path(path)
    os.close(os.open(file, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    os.chmod(file, FILE_MODE)
    return file


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to a 0600 file (never readable by others, not even for a moment)."""
    file = Path(path)
    fd = os.open(file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
    os.chmod(file, FILE_MODE)  # an existing file keeps its mode through os.open
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def read_or_create_secret(path: str | Path, nbytes: int = 24) -> str:
    """The secret kept in ``path`` (0600), generated on first use."""
    file = Path(path)
    if file.exists():
        os.chmod(file, FILE_MODE)
        secret = file.read_text().strip()
        if secret:
            return secret
    secret = secrets.token_urlsafe(nbytes)
    write_private(file, secret + "\n")
    return secret
