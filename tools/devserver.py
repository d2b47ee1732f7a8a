"""The whole service on a laptop, in one process: ``make run``.

- moto's ``ThreadedMotoServer`` is the embedded S3 (and SQS), on http://127.0.0.1:9000;
- the buckets are provisioned by ``tools.provision``, the code that provisions AWS;
- the upload bucket notifies an SQS queue of ``s3:ObjectCreated:*`` under ``uploads/``, and a
  thread feeds each event to the app's ``resize`` handler as Lambda would (one record per
  invocation, retried on failure, ``s3:TestEvent`` skipped);
- Chalice's own local server serves the routes on http://127.0.0.1:8000 (stage ``local``);
- both buckets are mirrored to ``DATA_DIR`` (``.data/``), each write before it is answered, and
  restored at start, so uploaded images survive a restart, a SIGKILL included;
- the reconciler (``chalicelib/reconcile.py``) runs at start over everything, which finishes any
  upload the last process left queued or in flight, then every ``--reconcile-every`` seconds;
  events the handler failed on three times go to a dead-letter queue it drains, as on AWS.

The app finds the embedded S3 through the standard ``AWS_ENDPOINT_URL`` variable, so its code
is the one that runs on AWS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.accesslog import install as quiet_access_log

ROOT = Path(__file__).resolve().parent.parent
STAGE = "local"
QUEUE = "imageshelf-local-resize"
DEFAULT_ACCOUNT = "123456789012"  # moto's, for any credentials it does not know
MAX_DELIVERIES = 3  # Lambda tries an asynchronous event three times
log = logging.getLogger("imageshelf.devserver")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devserver", description="Run imageshelf locally.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("S3_PORT", "9000")))
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT / ".data")))
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when app.py or chalicelib/ changes (uploads survive through DATA_DIR)",
    )
    parser.add_argument(
        "--reconcile-every",
        type=float,
        default=float(os.environ.get("RECONCILE_EVERY", "60")),
        help="seconds between reconciler runs (the first runs at start, over everything)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("RESIZE_WORKERS", "2")),
        help="concurrent resize invocations (Lambda's concurrency)",
    )
    return parser.parse_args(argv)


class Mirror:
    """Keeps the embedded S3's buckets in a folder, written through: every object a request
    creates, replaces or deletes is on disk before the request is answered (``MirroredMotoServer``),
    so what a client was told is stored survives SIGKILL; restored at start with its ETag and
    LastModified, which the app's ids, versions and grant checks are made of.

    One file per object (``<sha256 of the key>.obj``: a JSON header line, then the bytes), replaced
    atomically. Folders written by earlier versions (``.json`` + ``.bin`` pairs) are read too.
    """

    def __init__(self, backend: Any, buckets: list[str], folder: Path) -> None:
        self.backend, self.buckets, self.folder = backend, buckets, folder
        self.known: dict[str, dict[str, Any]] = {b: {} for b in buckets}  # key -> the FakeKey saved
        self.lock = threading.Lock()

    def _path(self, bucket: str, key: str, suffix: str = ".obj") -> Path:
        # Keys may hold any character and be 1 KiB long: name files by a hash of the key.
        return (
            self.folder / bucket / (hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() + suffix)
        )

    def restore(self) -> int:
        """Put every saved object back, as it was; returns how many."""
        count = 0
        for bucket in self.buckets:
            (self.folder / bucket).mkdir(parents=True, exist_ok=True)
            for path in sorted((self.folder / bucket).glob("*.obj")) + sorted(
                (self.folder / bucket).glob("*.json")
            ):
                try:
                    header, body = self._read(path)
                except (OSError, ValueError, KeyError):
                    continue  # a half-written file of an older version: skip it
                key = self.backend.put_object(
                    bucket, header["Key"], body, etag=header.get("ETag"), disable_notification=True
                )
                key.set_metadata(dict(header.get("Metadata", {})))
                if header.get("LastModified"):
                    key.last_modified = datetime.fromisoformat(header["LastModified"]).replace(tzinfo=None)
                self.known[bucket][header["Key"]] = key
                count += 1
        return count

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, Any], bytes]:
        if path.suffix == ".obj":
            raw = path.read_bytes()
            line, _, body = raw.partition(b"\n")
            return json.loads(line), body
        meta = json.loads(path.read_text())  # an older version's pair: metadata, then the bytes
        headers = {k: meta[k] for k in ("ContentType", "CacheControl") if meta.get(k)}
        metadata = {"Content-Type": headers.get("ContentType", "binary/octet-stream")}
        if headers.get("CacheControl"):
            metadata["Cache-Control"] = headers["CacheControl"]
        metadata |= {f"x-amz-meta-{k}": v for k, v in meta.get("Metadata", {}).items()}
        header = {"Key": meta["Key"], "Metadata": metadata}
        # Those folders kept no times: a presigned upload's is its id's, so it stays its image's.
        from chalicelib import storage

        if storage.is_id(meta["Key"].removeprefix(storage.UPLOAD_PREFIX)):
            made = storage.id_created_at(meta["Key"].removeprefix(storage.UPLOAD_PREFIX))
            header["LastModified"] = made.replace(tzinfo=None).isoformat()
        return header, path.with_suffix(".bin").read_bytes()

    def persist(self) -> None:
        """Write every object that changed since the last call, and remove the deleted ones."""
        with self.lock:
            for bucket in self.buckets:
                stored = self.backend.buckets[bucket].keys
                known = self.known[bucket]
                current = {name: stored.get(name) for name in list(stored)}
                for name, key in current.items():
                    if key is not None and known.get(name) is not key:
                        self._save(bucket, key)
                        known[name] = key
                for name in set(known) - set(current):
                    for path in (self._path(bucket, name), self._path(bucket, name, ".json")):
                        path.unlink(missing_ok=True)
                    self._path(bucket, name, ".bin").unlink(missing_ok=True)
                    del known[name]

    def _save(self, bucket: str, key: Any) -> None:
        header = {
            "Key": key.name,
            "ETag": key.etag.strip('"'),
            "LastModified": key.last_modified.isoformat(),
            "Metadata": dict(key.metadata),
        }
        path = self._path(bucket, key.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(json.dumps(header).encode() + b"\n" + key.value)
        tmp.replace(path)
        path.with_suffix(".json").unlink(missing_ok=True)  # an older version's pair, now replaced
        path.with_suffix(".bin").unlink(missing_ok=True)


class MirroredMotoServer:
    """moto's S3 (and SQS) server, answering a write to a mirrored bucket only once it is on disk."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.mirror: Mirror | None = None
        self.server: Any = None

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            mirror = self.mirror
            bucket = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
            if mirror is None or environ["REQUEST_METHOD"] not in ("PUT", "POST", "DELETE"):
                return moto_app(environ, start_response)
            if bucket not in mirror.buckets:
                return moto_app(environ, start_response)
            result = moto_app(environ, start_response)
            try:
                body = list(result)
            finally:
                getattr(result, "close", lambda: None)()
            mirror.persist()
            return body

        self.server = make_server(self.host, self.port, app, True, request_handler=MotoRequestHandler)
        threading.Thread(target=self.server.serve_forever, name="embedded-s3", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EventPump:
    """Delivers the upload bucket's S3 events from SQS to the resize handler, like Lambda."""

    def __init__(self, sqs: Any, queue_url: str, handler: Any, workers: int, dead_letters: str = "") -> None:
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
        self.dead_letters = dead_letters  # where an event goes once every delivery failed, as on AWS
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resize")
        # Take no more events than there are free workers: the rest stay in the queue, invisible
        # to nobody, so a backlog never outlives its visibility timeout and gets delivered twice.
        self.free = threading.Semaphore(workers)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="event-pump", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=False)

    def _run(self) -> None:
        while not self.stopping.is_set():
            if not self.free.acquire(timeout=0.5):
                continue
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=1,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
            except Exception:  # the embedded server is shutting down
                messages = []
                if not self.stopping.wait(0.5):
                    log.exception("could not read the event queue")
            if messages:
                self.pool.submit(self._deliver, messages[0])
            else:
                self.free.release()

    def _deliver(self, message: dict[str, Any]) -> None:
        try:
            self._invoke(message)
        except Exception:
            log.exception("could not settle an event with the queue")
        finally:
            self.free.release()

    def _invoke(self, message: dict[str, Any]) -> None:
        from chalice.local import LambdaContext

        body = json.loads(message["Body"])
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            for record in body.get("Records", []):
                # Lambda gets one record per S3 event; keys arrive URL-encoded, as from S3.
                self.handler(
                    {"Records": [record]}, LambdaContext("resize", memory_size=1769, max_runtime_ms=60_000)
                )
        except Exception:
            if attempt < MAX_DELIVERIES:
                log.exception("resize failed (attempt %d of %d); retrying", attempt, MAX_DELIVERIES)
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=attempt
                )
                return
            log.exception("resize failed %d times; giving up on this event", attempt)
            if self.dead_letters:  # the reconciler drains it (RESIZE_DLQ_URL), as on AWS
                self.sqs.send_message(QueueUrl=self.dead_letters, MessageBody=message["Body"])
        # Deleted after handling (or giving up), so nothing is lost if this process dies.
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _use_embedded_aws(s3_url: str) -> None:
    # Fixed local credentials: the embedded S3 ignores them, and real AWS never sees them.
    os.environ.update(
        AWS_ENDPOINT_URL=s3_url,
        AWS_ACCESS_KEY_ID="imageshelf-local",
        AWS_SECRET_ACCESS_KEY="imageshelf-local",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS"):
        os.environ.pop(name, None)


def _subscribe(s3: Any, sqs: Any, bucket: str, prefix: str) -> str:
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "resize",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ],
        },
    )
    return queue_url


def _code_snapshot() -> dict[Path, float]:
    files = [ROOT / "app.py", ROOT / ".chalice" / "config.json", *(ROOT / "chalicelib").rglob("*")]
    return {
        path: path.stat().st_mtime for path in files if path.is_file() and "__pycache__" not in path.parts
    }


def _watch_code(on_change: Any, stopping: threading.Event) -> None:
    before = _code_snapshot()
    while not stopping.wait(1.0):
        if _code_snapshot() != before:
            on_change()
            return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import boto3
    from chalice.cli.factory import CLIFactory
    from moto.s3.models import s3_backends

    from tools import moto_patches

    moto_patches.keep_replaced_buffers()
    moto_patches.atomic_conditional_writes()

    s3_url = f"http://{args.host}:{args.s3_port}"
    gallery = f"http://{args.host}:{args.port}"
    _use_embedded_aws(s3_url)
    moto = MirroredMotoServer(args.host, args.s3_port)
    moto.start()

    # Loading the app as `chalice local --stage local` does applies the stage's variables.
    factory = CLIFactory(str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=STAGE)
    app_obj = config.chalice_app
    app_module = sys.modules["app"]
    from chalicelib import reconcile
    from chalicelib.config import get_settings
    from chalicelib.storage import UPLOAD_PREFIX
    from tools.provision import provision

    settings = get_settings()
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    origins = sorted({gallery, f"http://localhost:{args.port}", *settings.allowed_origins} - {"*"})
    provision(s3, settings.upload_bucket, settings.images_bucket, origins)
    mirror = Mirror(
        s3_backends[DEFAULT_ACCOUNT]["aws"],
        [settings.upload_bucket, settings.images_bucket],
        Path(args.data_dir),
    )
    restored = mirror.restore()
    moto.mirror = mirror  # from now on every write is on disk before it is answered
    # The queue of events Lambda gave up on, drained by the reconciler, as on AWS.
    dead_letters = sqs.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
    os.environ["RESIZE_DLQ_URL"] = dead_letters
    # Subscribed after the restore, so restored uploads are not processed again by events: events
    # queued or in flight when the last process stopped are gone with it, and the reconciler's
    # first pass, below, finishes every upload that has no settled record.
    pump = EventPump(
        sqs,
        _subscribe(s3, sqs, settings.upload_bucket, UPLOAD_PREFIX),
        app_module.resize,
        args.workers,
        dead_letters,
    )
    pump.start()

    stopping = threading.Event()

    def reconcile_loop() -> None:
        full = True  # at start: every upload left unsettled, at once
        while not stopping.is_set():
            try:
                reconcile.run(get_settings(), full=full, workers=args.workers, line_log=app_module.app.log)
                full = False
            except Exception:
                if not stopping.is_set():
                    log.exception("the reconciler run failed; it runs again in %ss", args.reconcile_every)
            if stopping.wait(args.reconcile_every):
                return

    threading.Thread(target=reconcile_loop, name="reconciler", daemon=True).start()
    quiet_access_log()  # polls, listings, assets at debug level; ACCESS_LOG=debug shows them
    from chalice.local import ChaliceRequestHandler

    # Chalice sends a response's headers and body in two writes. On a kept-alive connection
    # (a browser's, a client's Session) Nagle's algorithm holds the body back until the client's
    # delayed ACK: about 40 ms added to every answer. TCP_NODELAY sends it at once.
    ChaliceRequestHandler.disable_nagle_algorithm = True
    server = factory.create_local_server(app_obj, config, args.host, args.port)

    def stop(signum: int, frame: Any) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restart = threading.Event()
    if args.reload:

        def code_changed() -> None:
            print("code changed: restarting", flush=True)
            restart.set()
            stop(0, None)

        threading.Thread(target=_watch_code, args=(code_changed, stopping), daemon=True).start()
    print(f"imageshelf is running (stage {STAGE}, {restored} objects restored from {args.data_dir})")
    print(f"  gallery and API   {gallery}/")
    print(f"  embedded S3       {s3_url}  (buckets {settings.upload_bucket}, {settings.images_bucket})")
    print("  Ctrl-C stops it.", flush=True)
    try:
        server.server.serve_forever(poll_interval=0.2)
    finally:
        stopping.set()
        pump.stop()
        mirror.persist()
        server.server.server_close()
        moto.stop()
        print("imageshelf stopped; data kept in", args.data_dir, flush=True)
    if restart.is_set():
        # A fresh interpreter loads the edited code; the data comes back from DATA_DIR.
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "tools.devserver", *(sys.argv[1:] if argv is None else argv)],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
