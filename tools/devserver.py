"""The whole service on a laptop, in one process: ``make run``.

- moto's ``ThreadedMotoServer`` is the embedded S3 (and SQS), on http://127.0.0.1:9000;
- the buckets are provisioned by ``tools.provision``, the code that provisions AWS;
- the upload bucket notifies an SQS queue of ``s3:ObjectCreated:*`` under ``uploads/``, and a
  thread feeds each event to the app's ``resize`` handler as Lambda would (one record per
  invocation, retried on failure, ``s3:TestEvent`` skipped);
- Chalice's own local server serves the routes on http://127.0.0.1:8000 (stage ``local``);
- both buckets are mirrored to ``DATA_DIR`` (``.data/``) every second and restored at start,
  so uploaded images survive a restart.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGE = "local"
QUEUE = "imageshelf-local-resize"
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
        "--workers",
        type=int,
        default=int(os.environ.get("RESIZE_WORKERS", "2")),
        help="concurrent resize invocations (Lambda's concurrency)",
    )
    return parser.parse_args(argv)


class Mirror:
    """Keeps a copy of buckets under a folder: written every second, restored at start."""

    def __init__(self, s3: Any, buckets: list[str], folder: Path) -> None:
        self.s3, self.buckets, self.folder = s3, buckets, folder
        self.known: dict[str, dict[str, str]] = {b: {} for b in buckets}
        self.lock = threading.Lock()

    def _paths(self, bucket: str, key: str) -> tuple[Path, Path]:
        # Keys may hold any character and be 1 KiB long: name files by a hash of the key.
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.folder / bucket / f"{name}.bin", self.folder / bucket / f"{name}.json"

    def restore(self) -> int:
        count = 0
        for bucket in self.buckets:
            for meta_path in sorted((self.folder / bucket).glob("*.json")):
                data_path = meta_path.with_suffix(".bin")
                try:
                    meta = json.loads(meta_path.read_text())
                    body = data_path.read_bytes()
                except (OSError, ValueError):
                    continue  # a half-written file from a crash: skip it
                extra = {k: meta[k] for k in ("ContentType", "CacheControl") if meta.get(k)}
                response = self.s3.put_object(
                    Bucket=bucket, Key=meta["Key"], Body=body, Metadata=meta.get("Metadata", {}), **extra
                )
                self.known[bucket][meta["Key"]] = response["ETag"]
                count += 1
        return count

    def sync(self) -> None:
        with self.lock:
            for bucket in self.buckets:
                self._sync_bucket(bucket)

    def _sync_bucket(self, bucket: str) -> None:
        current: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                current[obj["Key"]] = obj["ETag"]
        known = self.known[bucket]
        (self.folder / bucket).mkdir(parents=True, exist_ok=True)
        for key, etag in current.items():
            if known.get(key) != etag:
                self._save(bucket, key)
                known[key] = etag
        for key in set(known) - set(current):
            for path in self._paths(bucket, key):
                path.unlink(missing_ok=True)
            del known[key]

    def _save(self, bucket: str, key: str) -> None:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError:
            return  # deleted since it was listed
        data_path, meta_path = self._paths(bucket, key)
        meta = {
            "Key": key,
            "ContentType": obj.get("ContentType"),
            "CacheControl": obj.get("CacheControl"),
            "Metadata": obj.get("Metadata", {}),
        }
        for path, content in ((data_path, obj["Body"].read()), (meta_path, json.dumps(meta).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)


class EventPump:
    """Delivers the upload bucket's S3 events from SQS to the resize handler, like Lambda."""

    def __init__(self, sqs: Any, queue_url: str, handler: Any, workers: int) -> None:
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
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
    from moto.server import ThreadedMotoServer

    s3_url = f"http://{args.host}:{args.s3_port}"
    gallery = f"http://{args.host}:{args.port}"
    _use_embedded_aws(s3_url)
    moto = ThreadedMotoServer(ip_address=args.host, port=args.s3_port, verbose=False)
    moto.start()

    # Loading the app as `chalice local --stage local` does applies the stage's variables.
    factory = CLIFactory(str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=STAGE)
    app_obj = config.chalice_app
    app_module = sys.modules["app"]
    from chalicelib.config import get_settings
    from chalicelib.storage import UPLOAD_PREFIX
    from tools.provision import provision

    settings = get_settings()
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    origins = sorted({gallery, f"http://localhost:{args.port}", *settings.allowed_origins} - {"*"})
    provision(s3, settings.upload_bucket, settings.images_bucket, origins)
    mirror = Mirror(s3, [settings.upload_bucket, settings.images_bucket], Path(args.data_dir))
    restored = mirror.restore()
    # Subscribed after the restore, so restored uploads are not processed again.
    pump = EventPump(
        sqs, _subscribe(s3, sqs, settings.upload_bucket, UPLOAD_PREFIX), app_module.resize, args.workers
    )
    pump.start()

    stopping = threading.Event()

    def mirror_loop() -> None:
        while not stopping.wait(1.0):
            try:
                mirror.sync()
            except Exception:
                log.exception("could not save the embedded S3 to %s", args.data_dir)

    threading.Thread(target=mirror_loop, name="mirror", daemon=True).start()
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
        mirror.sync()
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
