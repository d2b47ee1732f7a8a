"""The benchmark corpus: real wallpapers from pinned Debian packages, fetched with apt-get download.

``python -m bench.corpus`` fetches and lists it. Files land in ``.cache/bench/corpus/``, one per
distinct picture (duplicates by content are dropped), 1 MP and up, named ``<package>-<name>.<ext>``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
CORPUS = CACHE / "corpus"
# Pinned so every run measures the same bytes (Debian 12 "bookworm" versions).
PACKAGES = {
    "lomiri-wallpapers": "20.04.0-2",
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "gnome-backgrounds": "43.1-1",  # the WebP wallpapers
}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}
MIN_PIXELS = 1_000_000


def _download(package: str, version: str, into: Path) -> Path:
    found = sorted(into.glob(f"{package}_*.deb"))
    if found:
        return found[0]
    error = ""
    for spec in (f"{package}={version}", package):  # fall back to the archive's current version
        result = subprocess.run(["apt-get", "download", spec], cwd=into, capture_output=True, text=True)
        found = sorted(into.glob(f"{package}_*.deb"))
        if result.returncode == 0 and found:
            if spec == package:
                print(f"warning: {package}={version} is gone; measured {found[0].name}", file=sys.stderr)
            return found[0]
        error = result.stderr.strip()
    raise SystemExit(f"apt-get download {package} failed: {error}")


def fetch() -> None:
    """Download the packages and extract their distinct large pictures into CORPUS."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    CORPUS.mkdir(parents=True, exist_ok=True)
    seen = {hashlib.sha256(p.read_bytes()).hexdigest() for p in CORPUS.iterdir()}
    for package, version in PACKAGES.items():
        stamp = CORPUS / f".{package}.done"
        if stamp.exists():
            continue
        deb = _download(package, version, debs)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_symlink() or not path.is_file() or path.suffix.lower() not in EXTENSIONS:
                    continue
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                try:
                    with Image.open(path) as im:
                        big = im.width * im.height >= MIN_PIXELS
                except Exception:
                    continue
                if digest in seen or not big:
                    continue
                seen.add(digest)
                rel = path.relative_to(tmp).parts
                # wallpapers/<Name>/contents/images[_dark]/<size>.jpg -> <Name>[-dark]-<size>.jpg
                if "contents" in rel:
                    i = rel.index("contents")
                    name = rel[i - 1] + ("-dark" if rel[i + 1].endswith("_dark") else "") + "-" + path.name
                else:
                    name = path.name
                short = package.split("-")[0]
                (CORPUS / f"{short}-{name.replace(' ', '_')}").write_bytes(data)
        stamp.touch()


def corpus(full: bool = False) -> list[Path]:
    """The corpus files, fetching them first if needed, sorted by name.

    Unless ``full``, the dark twins of light wallpapers (same picture, other palette) are left out
    to keep ``make bench`` short on a 2-core machine.
    """
    fetch()
    files = sorted(p for p in CORPUS.iterdir() if p.suffix.lower() in EXTENSIONS)
    return files if full else [p for p in files if "-dark" not in p.name and not p.stem.endswith("-d")]


if __name__ == "__main__":
    files = corpus()
    for p in files:
        with Image.open(p) as im:
            print(f"{p.name:60s} {im.format:5s} {im.mode:5s} {im.width}x{im.height} {p.stat().st_size:>10,}")
    print(f"{len(files)} files")
