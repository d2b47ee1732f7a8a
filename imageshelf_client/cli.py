"""``imageshelf``: upload, import, list, get and delete images from the command line.

    imageshelf upload cat.jpg dog.png --wait
    imageshelf import ~/Pictures/holiday --jobs 8
    imageshelf list --all --json | jq '.images[].id'
    IMAGESHELF_TOKEN=... imageshelf delete 0123456789abcdefghjk

The server is ``--url`` or ``$IMAGESHELF_URL`` (default http://127.0.0.1:8000). Exit status:
0 when everything worked, 1 when anything failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from .client import DEFAULT_URL, Client, ImageshelfError
from .models import Image

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"}
)


@dataclass
class Outcome:
    """What happened to one file."""

    path: str
    id: str | None = None
    status: str = "failed"  # pending, ready or failed
    bytes: int = 0
    error: dict[str, str] | None = None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the API's base URL (default: $IMAGESHELF_URL or {DEFAULT_URL})",
    )
    common.add_argument(
        "--token", default=argparse.SUPPRESS, help="the admin token, to delete (default: $IMAGESHELF_TOKEN)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout, for scripts"
    )
    bars = common.add_mutually_exclusive_group()
    bars.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show progress bars even when stderr is not a terminal",
    )
    bars.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="never show progress bars",
    )

    parser = argparse.ArgumentParser(
        prog="imageshelf", parents=[common], description="Upload photos to imageshelf and manage them."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser("upload", parents=[common], help="upload photos")
    upload.add_argument("paths", nargs="+", metavar="PATH", help="image files")
    upload.add_argument("--wait", action="store_true", help="wait until each image is ready or failed")
    _add_upload_options(upload)

    folder = commands.add_parser(
        "import", parents=[common], help="upload every image in a folder (recursively)"
    )
    folder.add_argument("folder", metavar="DIR")
    folder.add_argument(
        "--no-wait", dest="wait", action="store_false", help="do not wait for the images to be processed"
    )
    _add_upload_options(folder)

    listing = commands.add_parser("list", parents=[common], help="list images, newest first")
    listing.add_argument("--limit", type=int, default=24, help="images per page, 1-100 (default 24)")
    listing.add_argument("--cursor", help="the next_cursor of the previous page")
    listing.add_argument("--all", action="store_true", help="every image, following next_cursor")

    get = commands.add_parser("get", parents=[common], help="show one image")
    get.add_argument("image_id", metavar="ID")
    get.add_argument("--wait", action="store_true", help="wait while it is pending")
    get.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")

    delete = commands.add_parser("delete", parents=[common], help="delete images (needs the admin token)")
    delete.add_argument("image_ids", nargs="+", metavar="ID")
    return parser


def _add_upload_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", "-j", type=_positive, default=4, help="files sent at once (default 4)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for each image to be processed (default 120)",
    )
    parser.add_argument(
        "--method",
        choices=["put", "post"],
        default="put",
        help="upload with a presigned PUT (default) or a form POST",
    )


def _positive(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 64:
        raise argparse.ArgumentTypeError("must be from 1 to 64")
    return number


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    args = build_parser().parse_args(argv)
    for name, default in (("url", None), ("token", None), ("json", False), ("progress", None)):
        setattr(args, name, getattr(args, name, default))  # the options go before or after the command
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if args.progress is None:
        args.progress = err.isatty()
    with Client(args.url, token=args.token) as client:
        try:
            if args.command == "upload":
                return _uploads(client, [Path(p) for p in args.paths], args, out, err)
            if args.command == "import":
                return _import(client, Path(args.folder), args, out, err)
            if args.command == "list":
                return _list(client, args, out)
            if args.command == "get":
                image = client.wait(args.image_id, args.timeout) if args.wait else client.get(args.image_id)
                _print_image(image, args.json, out)
                return 1 if image.failed else 0
            return _delete(client, args, out, err)
        except ImageshelfError as error:
            _print_error(error, args.json, out, err)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=err)
            return 130


# --- upload and import ---------------------------------------------------------------------


def _import(client: Client, folder: Path, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not folder.is_dir():
        raise ImageshelfError("invalid_request", f"{folder} is not a folder.")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise ImageshelfError(
            "invalid_request",
            f"No images in {folder} (looked for files named {', '.join(sorted(IMAGE_SUFFIXES))}).",
        )
    return _uploads(client, images, args, out, err, skipped=len(files) - len(images))


def _uploads(
    client: Client, paths: list[Path], args: argparse.Namespace, out: TextIO, err: TextIO, skipped: int = 0
) -> int:
    """Send the files ``args.jobs`` at a time; with ``args.wait``, follow the uploaded images
    until each is ready or failed. Prints the summary; returns the exit status."""
    from tqdm import tqdm

    sizes = {path: _size(path) for path in paths}
    lock = threading.Lock()
    sent = tqdm(
        total=sum(sizes.values()),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="uploaded ",
        disable=not args.progress,
        file=err,
        position=0,
        dynamic_ncols=True,
    )
    done = tqdm(
        total=len(paths),
        unit="img",
        desc="processed" if args.wait else "files    ",
        disable=not args.progress,
        file=err,
        position=1,
        dynamic_ncols=True,
    )

    def progress(count: int) -> None:
        with lock:
            sent.update(count)

    def upload(path: Path) -> Outcome:
        outcome = Outcome(path=str(path), bytes=sizes[path])
        try:
            outcome.id = client._upload(path, None, None, args.method, progress)
            outcome.status = "pending"
        except ImageshelfError as error:
            outcome.status, outcome.error = "failed", {"code": error.code, "message": error.message}
        except OSError as error:
            outcome.status = "failed"
            outcome.error = {
                "code": "unreadable_file",
                "message": f"Could not read {path}: {error.strerror}.",
            }
        return outcome

    def finish(outcome: Outcome) -> None:
        with lock:
            done.update(1)

    try:
        with ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="upload") as pool:
            futures = {pool.submit(upload, path) for path in paths}
            outcomes = _follow(client, futures, args, finish)
    finally:
        sent.close()
        done.close()
    order = {str(path): index for index, path in enumerate(paths)}
    outcomes.sort(key=lambda o: order[o.path])
    _summary(outcomes, args, out, skipped)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _settle(outcome: Outcome, image: Image) -> None:
    outcome.id, outcome.status = image.id, image.status
    if image.error:
        outcome.error = {"code": image.error.code, "message": image.error.message}


def _follow(
    client: Client,
    futures: set[Future[Outcome]],
    args: argparse.Namespace,
    finish: Callable[[Outcome], None],
    interval: float = 0.25,
) -> list[Outcome]:
    """Collect the uploads as they end and, with ``args.wait``, wait for their images.

    The uploads never wait themselves, so the pool keeps sending while earlier images are
    processed; this thread polls the pending ones oldest first, about one request per image.
    """
    outcomes: list[Outcome] = []
    waiting: dict[str, Outcome] = {}
    deadline: float | None = None
    progressed = False
    while futures or waiting:
        pause = interval / 4 if progressed else interval
        if futures:
            ended, futures = wait(futures, timeout=pause if waiting else None, return_when=FIRST_COMPLETED)
        else:
            ended = set()
            time.sleep(pause)
        for future in ended:
            outcome = future.result()
            outcomes.append(outcome)
            if args.wait and outcome.status == "pending" and outcome.id:
                waiting[outcome.id] = outcome
            else:
                finish(outcome)
        if not futures and deadline is None:
            deadline = time.monotonic() + args.timeout
        settled = _poll(client, waiting) if waiting else []
        for outcome in settled:
            finish(outcome)
        progressed = bool(settled)
        if deadline is not None and time.monotonic() > deadline:
            break
    for image_id, outcome in list(waiting.items()):  # a last look at each straggler
        try:
            _settle(outcome, client.get(image_id))
        except ImageshelfError as error:
            outcome.status, outcome.error = "failed", {"code": error.code, "message": error.message}
        if outcome.status == "pending":
            outcome.status = "failed"
            outcome.error = {
                "code": "wait_timeout",
                "message": f"Still pending {args.timeout:g}s after the "
                "last upload; wait longer (--timeout) or check that the server processes uploads.",
            }
        finish(outcome)
    return outcomes


def _poll(client: Client, waiting: dict[str, Outcome], budget: int = 8) -> list[Outcome]:
    """Look at the images waited for longest (the server processes uploads about in order),
    up to ``budget`` of them, stopping at the first still pending; returns those settled."""
    settled: list[Outcome] = []
    for image_id in list(waiting)[:budget]:
        try:
            image = client.get(image_id)
        except ImageshelfError:
            break  # tried again next round, and once more at the end
        if image.pending:
            break
        outcome = waiting.pop(image_id)
        _settle(outcome, image)
        settled.append(outcome)
    return settled


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summary(outcomes: list[Outcome], args: argparse.Namespace, out: TextIO, skipped: int) -> None:
    uploaded = [o for o in outcomes if o.id is not None]
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ready", "pending", "failed")}
    if args.json:
        json.dump(
            {
                "uploaded": len(uploaded),
                **counts,
                "skipped": skipped,
                "results": [asdict(o) for o in outcomes],
            },
            out,
            indent=2,
        )
        out.write("\n")
        return
    line = f"uploaded {len(uploaded)} of {len(outcomes)}"
    if args.wait:
        line += f", ready {counts['ready']}"
    elif counts["pending"]:
        line += f", pending {counts['pending']}"
    line += f", failed {counts['failed']}"
    if skipped:
        line += f" (skipped {skipped} files not named like images)"
    print(line, file=out)
    for outcome in outcomes:
        if outcome.status == "failed" and outcome.error:
            where = f" [{outcome.id}]" if outcome.id else ""
            print(
                f"  failed: {outcome.path}{where}: {outcome.error['message']} ({outcome.error['code']})",
                file=out,
            )


# --- list, get, delete -----------------------------------------------------------------------


def _list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.all:
        images = list(client.iter_images(limit=min(max(args.limit, 1), 100)))
        next_cursor = None
    else:
        page = client.list(limit=args.limit, cursor=args.cursor)
        images, next_cursor = list(page.images), page.next_cursor
    if args.json:
        json.dump({"images": [i.to_json() for i in images], "next_cursor": next_cursor}, out, indent=2)
        out.write("\n")
        return 0
    for image in images:
        size = f"{image.original.width}x{image.original.height}" if image.original.width else "-"
        print(
            f"{image.id}  {image.status:<7}  {size:>11}  {image.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{image.original.filename}",
            file=out,
        )
    if next_cursor:
        print(f"more: imageshelf list --cursor {next_cursor}", file=out)
    elif not images:
        print("no images", file=out)
    return 0


def _print_image(image: Image, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(image.to_json(), out, indent=2)
        out.write("\n")
        return
    original = image.original
    lines = [
        f"id:        {image.id}",
        f"status:    {image.status}",
        f"created:   {image.created_at.isoformat()}",
        f"filename:  {original.filename}",
        f"original:  {original.format or '-'} {original.width or '-'}x{original.height or '-'}, "
        f"{original.bytes} bytes",
    ]
    if image.error:
        lines.append(f"error:     {image.error.message} ({image.error.code})")
    for rendition in image.renditions:
        lines.append(
            f"{rendition.name + ':':<10} {rendition.width}x{rendition.height} {rendition.content_type}, "
            f"{rendition.bytes} bytes  {rendition.url}"
        )
    print("\n".join(lines), file=out)


def _delete(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    results: list[dict[str, Any]] = []
    for image_id in args.image_ids:
        try:
            client.delete(image_id)
            results.append({"id": image_id, "deleted": True, "error": None})
            if not args.json:
                print(f"deleted {image_id}", file=out)
        except ImageshelfError as error:
            if error.code == "connection_error":
                raise
            results.append(
                {"id": image_id, "deleted": False, "error": {"code": error.code, "message": error.message}}
            )
            if not args.json:
                _print_error(error, False, out, err, subject=image_id)
    if args.json:
        json.dump({"results": results}, out, indent=2)
        out.write("\n")
    return 0 if all(r["deleted"] for r in results) else 1


def _print_error(error: ImageshelfError, as_json: bool, out: TextIO, err: TextIO, subject: str = "") -> None:
    if as_json:
        json.dump({"error": {"code": error.code, "message": error.message}}, out, indent=2)
        out.write("\n")
        return
    hint = ""
    if error.code == "unauthorized":
        hint = " Pass --token or set IMAGESHELF_TOKEN."
    prefix = f"error: {subject}: " if subject else "error: "
    print(f"{prefix}{error.message} ({error.code}){hint}", file=err)


if __name__ == "__main__":
    sys.exit(main())
