"""Backfill: ``python -m tools.reprocess`` (``make reprocess``) redoes images processed before today's
settings, so they get a placeholder, their details (GET /images/{id}/info) and the RENDITION_FORMATS
copies (WebP, AVIF) of each rendition.

Idempotent: an image already processed with today's settings is skipped, so a second run does
nothing and an interrupted run picks up where it stopped. Each image is re-rendered from its
original, which must still be the version its record describes; the JPEG/PNG renditions are
rewritten as they were (same keys), the copies added, and the record replaced. Prints one JSON line
per image it redid and a summary. ``--dry-run`` only counts.

Settings come from the stage in ``.chalice/config.json`` as for ``tools.reconcile``: the local stage
with no ``AWS_ENDPOINT_URL`` uses the embedded S3 of ``make run``; ``--stage prod`` with AWS
credentials backfills a deployed stage (run it where the renders are affordable: it decodes every
original it redoes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from chalicelib.config import Settings
from tools.provision import stage_environment


def local_environment(stage: str) -> None:
    """The stage's settings; for the local stage, the embedded S3 of ``make run`` unless told otherwise."""
    for name, value in stage_environment(stage).items():
        os.environ.setdefault(name, value)
    if stage == "local" and not (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")):
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{os.environ.get('S3_PORT', '9000')}"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "imageshelf-local")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.reprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="local", help="the stage in .chalice/config.json (local)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be redone, change nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    local_environment(args.stage)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from chalicelib.config import get_settings

    counts = run(get_settings(), dry_run=args.dry_run, line_log=logging.getLogger("imageshelf"))
    print(json.dumps(counts))
    return 1 if counts["failed"] else 0


def run(settings: Settings, dry_run: bool = False, line_log: logging.Logger | None = None) -> dict[str, int]:
    """One pass over every image; returns how many were redone, already current, or failed."""
    from chalicelib import processing, storage

    counts = {"images": 0, "reprocessed": 0, "current": 0, "skipped": 0, "failed": 0}
    cursor: str | None = None
    while True:
        records, cursor = storage.list_images(100, cursor, settings)
        for record in records:
            counts["images"] += 1
            if not processing.needs_reprocessing(record, settings):
                counts["current"] += 1
                continue
            if dry_run:
                counts["reprocessed"] += 1
                continue
            try:
                outcome = processing.reprocess_image(record.id, settings, line_log=line_log)
            except Exception:
                counts["failed"] += 1  # logged by reprocess_image; a later run tries again
                continue
            key = {"ready": "reprocessed", "duplicate": "current"}.get(outcome.outcome, "skipped")
            counts[key] += 1
        if cursor is None:
            return counts


if __name__ == "__main__":
    sys.exit(main())
