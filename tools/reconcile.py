"""The reconciler for ``chalice local`` users: ``python -m tools.reconcile``.

``make run`` runs the reconciler itself (at start, then every minute). Someone who serves the app
with ``chalice local --stage local`` instead runs this beside it: one pass over everything at start
(finishing uploads a stopped process left unsettled), then a pass every ``--every`` seconds, each
printing its report as one JSON line. ``--once`` runs the first pass only.

It uses the stage's settings from ``.chalice/config.json`` (as ``chalice local --stage`` does) and,
for the local stage with no ``AWS_ENDPOINT_URL`` set, the embedded S3 of ``make run`` on
``S3_PORT`` (9000) with its fixed credentials: it never reaches AWS unless told to.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from tools.provision import stage_environment


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.reconcile", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="local", help="the stage in .chalice/config.json (local)")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between passes (60)")
    parser.add_argument("--once", action="store_true", help="one pass over everything, then stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name, value in stage_environment(args.stage).items():
        os.environ.setdefault(name, value)
    if args.stage == "local" and not (
        os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    ):
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{os.environ.get('S3_PORT', '9000')}"
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "imageshelf-local"),
            ("AWS_SECRET_ACCESS_KEY", "imageshelf-local"),
        ):
            os.environ.setdefault(name, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    for noisy in ("botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from chalicelib import reconcile
    from chalicelib.config import get_settings

    line_log = logging.getLogger("imageshelf")
    full = True
    while True:
        try:
            reconcile.run(get_settings(), full=full, line_log=line_log)
            full = False
        except Exception:
            if args.once:
                raise
            logging.getLogger("imageshelf.reconcile").exception(
                "the pass failed; the next is in %ss", args.every
            )
        sys.stdout.flush()
        if args.once:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
