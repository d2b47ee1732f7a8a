"""What ``imageshelf import`` has uploaded to a server: each file's SHA-256 and the image id it got.

The server keeps no index of content hashes, so the command keeps one: a JSON Lines file per
server URL under ``$XDG_CACHE_HOME/imageshelf/imports/`` (``~/.cache/imageshelf/imports/``).
A line is appended, and flushed, as soon as storage has accepted a file, so an interrupted import
loses at most the files that were in flight; a line cut short by a crash is ignored. When an import
ends, the file is compacted to one line per hash and replaced atomically (a temporary file renamed
over it). Hashes, not paths, are the keys: a renamed or moved photo is still the same photo, and a
folder imported from another place finds what was uploaded before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHUNK = 1024 * 1024


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imageshelf" / "imports"


def path_for(url: str) -> Path:
    """The manifest of the server at ``url``: a readable name, and a hash so that no two URLs share it."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", parts.netloc + parts.path).strip("-")[:60] or "server"
    return cache_dir() / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:10]}.jsonl"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Manifest:
    """sha256 -> ``{"sha256", "id", "path", "at"}`` for one server, on disk as JSON Lines."""

    def __init__(self, url: str, path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.path = path or path_for(self.url)
        self.entries: dict[str, dict[str, Any]] = {}
        self.lines = 0
        self.recorded = 0  # by this run
        self._lock = threading.Lock()
        self.entries, self.lines = self._read()

    def id_of(self, digest: str) -> str | None:
        entry = self.entries.get(digest)
        return str(entry["id"]) if entry else None

    def record(self, digest: str, image_id: str, path: Path) -> None:
        """Note that the file with this hash is now image ``image_id``: on disk at once."""
        entry = {
            "sha256": digest,
            "id": image_id,
            "path": str(path),
            "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.entries[digest] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.lines == 0 and not self.path.exists():
                header = {"server": self.url}
                line = json.dumps(header) + "\n" + line
            # One write of a short line in append mode: it lands whole, after everything before it.
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
            self.lines += line.count("\n")
            self.recorded += 1

    def compact(self) -> None:
        """Rewrite as one line per hash, atomically. Lines another run appended since this one
        started are read again first, so they are kept."""
        with self._lock:
            if not self.path.exists():
                return
            on_disk, lines = self._read()
            merged = {**on_disk, **self.entries}
            if lines <= len(merged) + 1:
                self.entries = merged
                return  # nothing superseded, nothing to gain
            body = json.dumps({"server": self.url}) + "\n"
            body += "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in merged.values())
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(body, encoding="utf-8")
            os.replace(temporary, self.path)
            self.entries, self.lines = merged, len(merged) + 1

    def _read(self) -> tuple[dict[str, dict[str, Any]], int]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}, 0
        entries: dict[str, dict[str, Any]] = {}
        lines = 0
        for line in text.splitlines():
            lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # cut short by a crash or a full disk
            if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("sha256", "id")):
                entries[entry["sha256"]] = entry
        return entries, lines
