"""``imageshelf``: upload, import, list, get, render, identify and delete images from the command line.

    imageshelf upload cat.jpg dog.png --wait
    imageshelf import ~/Pictures/holiday --jobs 8     # again later: only what is new
    imageshelf list --all --json | jq '.images[].id'
    imageshelf render sample --width 800 --format webp --filter sepia -o out.webp
    imageshelf info sample
    IMAGESHELF_TOKEN=... imageshelf delete 0123456789abcdefghjk

The server is ``--url`` or ``$IMAGESHELF_URL`` (default http://127.0.0.1:8000). Exit status:
0 when everything worked, 1 when anything failed, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .client import DEFAULT_URL, Client, ImageshelfError
from .manifest import Manifest, sha256_of
from .models import Image, ImageInfo

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif", ".heic", ".heif"}
)


@dataclass
class Outcome:
    """What happened to one file."""

    path: str
    id: str | None = None
    status: str = "failed"  # pending, ready or failed
    bytes: int = 0
    error: dict[str, str] | None = None


@dataclass
class Skipped:
    """The files of a folder that ``import`` did not send, and why."""

    not_images: int = 0
    on_shelf: list[tuple[Path, str]] = field(default_factory=list)  # (file, the image it is)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (file, the same file sent)

    @property
    def total(self) -> int:
        return self.not_images + len(self.on_shelf) + len(self.duplicates)

    def to_json(self) -> list[dict[str, str | None]]:
        return [
            {"path": str(path), "reason": "on_shelf", "id": image_id, "same_as": None}
            for path, image_id in self.on_shelf
        ] + [
            {"path": str(path), "reason": "duplicate", "id": None, "same_as": str(first)}
            for path, first in self.duplicates
        ]


def plural(count: int, one: str, many: str) -> str:
    """``plural(1, "file", "files")`` -> ``"1 file"``."""
    return f"{count} {one if count == 1 else many}"


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
        "--upload-token",
        default=argparse.SUPPRESS,
        help="the upload token, where uploads need one (default: $IMAGESHELF_UPLOAD_TOKEN)",
    )
    common.add_argument(
        "--render-key",
        default=argparse.SUPPRESS,
        help="the deployment's render signing key, to sign renders (default: $IMAGESHELF_RENDER_KEY)",
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
        prog="imageshelf",
        parents=[common],
        description="Upload photos to imageshelf, manage them, render and identify them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser("upload", parents=[common], help="upload photos")
    upload.add_argument("paths", nargs="+", metavar="PATH", help="image files")
    upload.add_argument("--wait", action="store_true", help="wait until each image is ready or failed")
    _add_upload_options(upload)

    folder = commands.add_parser(
        "import",
        parents=[common],
        help="upload every image in a folder (recursively), skipping those already on the shelf",
        description="Upload every image in a folder and its subfolders. Files uploaded by an earlier "
        "import to the same server (same content, whatever their name) are skipped while their image "
        "is still there, so running it again, or after an interruption, sends only what is missing. "
        "What was uploaded is remembered in ~/.cache/imageshelf/imports/ ($XDG_CACHE_HOME).",
    )
    folder.add_argument("folder", metavar="DIR")
    folder.add_argument(
        "--no-wait", dest="wait", action="store_false", help="do not wait for the images to be processed"
    )
    folder.add_argument(
        "--force", action="store_true", help="upload every file, even those already on the shelf"
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

    render = commands.add_parser(
        "render",
        parents=[common],
        help="download a render of an image: resized, cropped, converted or filtered",
        description="Render an image (ID, or 'sample' for the bundled sample photo) on the server and "
        "download it. Without -o it is saved as ID.EXT in the current folder (EXT from the type "
        "the server sent: .jpg, .png, .webp, .avif, .gif); -o - writes it to stdout, which must not "
        "be a terminal. Where the server asks for signed renders, pass --render-key (or use a "
        "--preset, which needs no signature).",
    )
    render.add_argument("image_id", metavar="ID")
    render.add_argument("--width", type=int, help="at most this wide, 1-4096 (never enlarged)")
    render.add_argument("--height", type=int, help="at most this high, 1-4096 (never enlarged)")
    render.add_argument(
        "--fit",
        help="contain (default: inside the box), cover (fill the box and crop) or fill (stretch); "
        "cover and fill need --width and --height",
    )
    render.add_argument(
        "--gravity", help="what cover keeps: center (default), north, south, east, west or smart"
    )
    render.add_argument(
        "--format", help="jpeg, png, webp, avif or auto (default: as renditions are, JPEG or PNG)"
    )
    render.add_argument("--quality", type=int, help="1-100 (not for png)")
    render.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="FILTER",
        help="grayscale, sepia, negate, sharpen, blur:SIGMA (up to 50), rotate:90|180|270 or flip:h|v; "
        "repeat it (or separate with commas) for several, applied in order",
    )
    render.add_argument("--preset", help="a preset of the deployment instead (thumb, large, square, ...)")
    render.add_argument("--download", action="store_true", help="ask for a download (dl=1: browsers save it)")
    render.add_argument("--output", "-o", metavar="FILE", help="where to write it; - for stdout")
    render.add_argument(
        "--print-url",
        action="store_true",
        help="print the render's URL (signed with --render-key) instead of downloading it",
    )

    info = commands.add_parser(
        "info",
        parents=[common],
        help="show an image's details: format, size, colour, camera",
        description="Show the details read from an image's original (ID, or 'sample'): format, "
        "dimensions, frames, colour mode and profile, EXIF orientation, the camera's EXIF "
        "essentials, whether it had a location (never the coordinates), and its dominant colour.",
    )
    info.add_argument("image_id", metavar="ID")

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
    for name, default in (
        ("url", None),
        ("token", None),
        ("upload_token", None),
        ("render_key", None),
        ("json", False),
        ("progress", None),
    ):
        setattr(args, name, getattr(args, name, default))  # the options go before or after the command
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if args.progress is None:
        args.progress = err.isatty()
    with Client(
        args.url, token=args.token, upload_token=args.upload_token, signing_key=args.render_key
    ) as client:
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
            if args.command == "render":
                return _render(client, args, out, err)
            if args.command == "info":
                _print_info(client.info(args.image_id), args.json, out)
                return 0
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
    manifest = Manifest(client.url)
    skipped = Skipped(not_images=len(files) - len(images))
    digests = _digests(images, args.jobs)
    send = _to_send(client, images, digests, manifest, skipped, args)

    def record(path: Path, image_id: str) -> None:
        digest = digests.get(path)
        if digest:
            manifest.record(digest, image_id, path)

    try:
        return _uploads(client, send, args, out, err, skipped, record)
    except KeyboardInterrupt:
        print(
            f"interrupted: {plural(manifest.recorded, 'upload', 'uploads')} of this run recorded; "
            "run the same command again to send the rest",
            file=err,
        )
        raise
    finally:
        try:
            manifest.compact()
        except OSError as error:  # the appended lines are kept; compacting can wait for next time
            print(f"note: could not tidy {manifest.path}: {error.strerror}", file=err)


def _digests(paths: list[Path], jobs: int) -> dict[Path, str | None]:
    """Each file's SHA-256 (None if it cannot be read: its upload then says why)."""

    def digest(path: Path) -> str | None:
        try:
            return sha256_of(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="hash") as pool:
        return dict(zip(paths, pool.map(digest, paths), strict=True))


def _to_send(
    client: Client,
    paths: list[Path],
    digests: dict[Path, str | None],
    manifest: Manifest,
    skipped: Skipped,
    args: argparse.Namespace,
) -> list[Path]:
    """The files to upload: one per content, and (unless ``--force``) not those an earlier import
    sent whose image is still on the shelf. A deleted image's file, or a failed one's, goes again."""
    first: dict[str, Path] = {}
    unique: list[Path] = []
    for path in paths:
        digest = digests[path]
        if digest is not None and digest in first:
            skipped.duplicates.append((path, first[digest]))
            continue
        if digest is not None:
            first[digest] = path
        unique.append(path)
    if args.force:
        return unique
    known: dict[Path, str] = {}
    for path in unique:
        digest = digests[path]
        image_id = manifest.id_of(digest) if digest else None
        if image_id:
            known[path] = image_id

    def still_there(image_id: str) -> bool:
        try:
            return not client.get(image_id).failed
        except ImageshelfError as error:
            if error.code == "not_found":
                return False
            raise

    with ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="check") as pool:
        there = dict(zip(known, pool.map(still_there, known.values()), strict=True))
    skipped.on_shelf.extend((path, known[path]) for path in unique if there.get(path))
    return [path for path in unique if not there.get(path)]


def _uploads(
    client: Client,
    paths: list[Path],
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    skipped: Skipped | None = None,
    record: Callable[[Path, str], None] | None = None,
) -> int:
    """Send the files ``args.jobs`` at a time; with ``args.wait``, follow the uploaded images
    until each is ready or failed. ``record`` is told each file's image id as soon as storage has
    its bytes. Prints the summary; returns the exit status. Interrupted, it lets the uploads in
    flight end (and be recorded), starts no other, and raises ``KeyboardInterrupt``."""
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
            if record:
                record(path, outcome.id)
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

    pool = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="upload")
    try:
        futures = {pool.submit(upload, path) for path in paths}
        outcomes = _follow(client, futures, args, finish)
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)  # the ones in flight end; no new one starts
        raise
    finally:
        pool.shutdown(wait=True)
        sent.close()
        done.close()
    order = {str(path): index for index, path in enumerate(paths)}
    outcomes.sort(key=lambda o: order[o.path])
    _summary(outcomes, args, out, skipped or Skipped())
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


def _summary(outcomes: list[Outcome], args: argparse.Namespace, out: TextIO, skipped: Skipped) -> None:
    uploaded = [o for o in outcomes if o.id is not None]
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ready", "pending", "failed")}
    if args.json:
        json.dump(
            {
                "uploaded": len(uploaded),
                **counts,
                "skipped": skipped.total,
                "on_shelf": len(skipped.on_shelf),
                "duplicates": len(skipped.duplicates),
                "not_images": skipped.not_images,
                "results": [asdict(o) for o in outcomes],
                "skipped_files": skipped.to_json(),
            },
            out,
            indent=2,
        )
        out.write("\n")
        return
    if outcomes:
        line = f"uploaded {len(uploaded)} of {len(outcomes)}"
        if args.wait:
            line += f", ready {counts['ready']}"
        elif counts["pending"]:
            line += f", pending {counts['pending']}"
        line += f", failed {counts['failed']}"
    else:
        line = "nothing new to upload"
    print(line, file=out)
    reasons = []
    if skipped.on_shelf:
        reasons.append(
            f"{len(skipped.on_shelf)} already on the shelf (imported before; --force uploads them again)"
        )
    if skipped.duplicates:
        count = len(skipped.duplicates)
        reasons.append(plural(count, "duplicate of another file", "duplicates of other files"))
    if skipped.not_images:
        count = skipped.not_images
        reasons.append(plural(count, "file not named like an image", "files not named like images"))
    if reasons:
        print("skipped " + ", ".join(reasons), file=out)
    for outcome in outcomes:
        if outcome.status == "failed" and outcome.error:
            where = f" [{outcome.id}]" if outcome.id else ""
            print(
                f"  failed: {outcome.path}{where}: {outcome.error['message']} ({outcome.error['code']})",
                file=out,
            )
    if any(_needs_upload_token(o.error) for o in outcomes if o.status == "failed" and o.error):
        print("Uploads here need a token: pass --upload-token or set IMAGESHELF_UPLOAD_TOKEN.", file=out)


def _needs_upload_token(error: dict[str, str]) -> bool:
    return error["code"] in ("unauthorized", "forbidden") and "upload token" in error["message"]


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


# --- render and info ---------------------------------------------------------------------------


def _render(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Download the render to ``--output`` (default ``ID.EXT``; ``-`` is stdout, never a terminal),
    or with ``--print-url`` print its URL. Says what it wrote on stdout (stderr with ``-o -``)."""
    parameters: dict[str, Any] = {
        "width": args.width,
        "height": args.height,
        "fit": args.fit,
        "gravity": args.gravity,
        "format": args.format,
        "quality": args.quality,
        "filters": args.filters,
        "download": args.download,
        "preset": args.preset,
    }
    if args.print_url:
        url = client.render_url(args.image_id, **parameters)
        if args.json:
            json.dump({"id": args.image_id, "url": url}, out, indent=2)
            out.write("\n")
        else:
            print(url, file=out)
        return 0
    to_stdout = args.output == "-"
    if to_stdout and out.isatty():
        raise ImageshelfError(
            "invalid_request",
            "Not writing image bytes to a terminal: pass -o FILE, or pipe the output (-o - | ...).",
        )
    rendered = client.render(args.image_id, **parameters)
    if to_stdout:
        out.flush()
        binary = getattr(out, "buffer", None)
        if binary is None:
            raise ImageshelfError("invalid_request", "This output cannot take bytes: pass -o FILE.")
        binary.write(rendered)
        binary.flush()
        shown, report = "stdout", err
    else:
        path = Path(args.output or _safe_name(args.image_id) + (rendered.extension or ".img"))
        try:
            path.write_bytes(rendered)
        except OSError as error:
            raise ImageshelfError("unwritable_file", f"Could not write {path}: {error.strerror}.") from None
        shown, report = str(path), out
    result = {"id": args.image_id, "path": shown, "content_type": rendered.content_type}
    result |= {"bytes": len(rendered), "url": rendered.url}
    if args.json and not to_stdout:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        print(f"wrote {shown}: {rendered.content_type}, {len(rendered)} bytes", file=report)
    return 0


def _safe_name(image_id: str) -> str:
    """A file name from an id (ids are letters and digits; anything else becomes ``_``)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in image_id) or "render"


def _print_info(info: ImageInfo, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(info.to_json(), out, indent=2)
        out.write("\n")
        return
    size = f"{info.width}x{info.height}" if info.width and info.height else "-"
    frames = f", {plural(info.frames, 'frame', 'frames')}" if info.frames and info.frames > 1 else ""
    colour = [info.mode or "-"]
    if info.bit_depth:
        colour.append(f"{info.bit_depth}-bit")
    if info.has_alpha is not None:
        colour.append("with alpha" if info.has_alpha else "no alpha")
    lines = [
        ("id", info.id),
        ("filename", info.filename),
        ("format", f"{info.format or '-'} ({info.content_type or '-'})"),
        ("size", f"{size}{frames}{' (animated)' if info.animated else ''}"),
        ("colour", ", ".join(colour)),
        ("profile", info.color_profile or "-"),
        ("orientation", "-" if info.orientation is None else str(info.orientation)),
    ]
    camera = info.camera
    if camera is not None:
        make, model = camera.make or "", camera.model or ""
        same = make and model.lower().startswith(make.lower())  # "Canon" "Canon EOS R5"
        lines.append(("camera", (model if same else f"{make} {model}".strip()) or "-"))
        if camera.lens:
            lines.append(("lens", str(camera.lens)))
        lines.append(("taken", str(camera.taken_at or "-")))
        lines.append(
            ("exposure", _exposure(camera.exposure_time, camera.f_number, camera.iso, camera.focal_length))
        )
    else:
        lines.append(("camera", "-"))
    if info.has_location is not None:
        lines.append(("location", "yes (coordinates not shown)" if info.has_location else "no"))
    lines.append(("dominant", info.dominant_color or "-"))
    print("\n".join(f"{label + ':':<13}{value}" for label, value in lines), file=out)


def _exposure(time: str | None, f_number: float | None, iso: int | None, focal: float | None) -> str:
    """``1/250 s, f/8, ISO 100, 50 mm`` from what the camera wrote (each part only if known)."""
    parts = [
        f"{time} s" if time else "",
        f"f/{f_number:g}" if f_number else "",
        f"ISO {iso}" if iso else "",
        f"{focal:g} mm" if focal else "",
    ]
    return ", ".join(p for p in parts if p) or "-"


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
    if error.code in ("unauthorized", "forbidden") and "upload token" in error.message:
        hint = " Pass --upload-token or set IMAGESHELF_UPLOAD_TOKEN."
    elif error.code == "unauthorized":
        hint = " Pass --token or set IMAGESHELF_TOKEN."
    elif error.code == "forbidden" and "signature" in error.message:
        hint = " Pass --render-key or set IMAGESHELF_RENDER_KEY."
    prefix = f"error: {subject}: " if subject else "error: "
    print(f"{prefix}{error.message} ({error.code}){hint}", file=err)


if __name__ == "__main__":
    sys.exit(main())
