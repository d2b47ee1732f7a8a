"""moto's server for the deploy rehearsal, with six fixes where moto 5.2.5 is not AWS.

``python -m tests.moto_server --port 5000`` patches moto in its own process, then serves every
AWS service on http://127.0.0.1:5000 until stdin closes (``MotoServer`` below runs it for a test).
Nothing here reaches the product: ``make deploy`` talks to this server as it would to AWS.

1. S3 ``PutBucketNotificationConfiguration``: moto asserts filter rule names are ``prefix`` or
   ``suffix``; AWS also takes ``Prefix``, which Chalice sends. The names are lower-cased before
   moto parses them (moto then matches keys against the prefix as AWS does).
2. API Gateway ``ImportRestApi``: moto reads ``info.description``, which is optional (Chalice's
   document has none). A missing one is taken as empty.
3. API Gateway ``ImportRestApi``/``PutRestApi``: moto accepts only OpenAPI 3; Chalice sends
   Swagger 2.0, which AWS accepts. moto reads only ``paths`` (methods, responses and the
   ``x-amazon-apigateway-integration`` extension, the same in both), so the document is handed
   to it labelled OpenAPI 3.
4. CloudFront: moto forgets an origin's ``OriginAccessControlId`` and ``S3OriginConfig``; it
   keeps them here, so the rehearsal can read back what deploy configured.
5. S3 bucket policies: moto applies a statement whose ``Condition`` does not hold as a denial
   (so deploy's "deny unless over TLS" denies everything). Here a statement applies only when its
   conditions hold, for a request over TLS (``aws:SecureTransport`` true: boto3 talks TLS to AWS;
   this server is plain HTTP) that no AWS service makes on another resource's behalf (no
   ``aws:SourceArn``, so the CloudFront statement does not apply to the test's own requests).
6. Lambda ``Invoke`` (with ``--run-functions``): moto runs a function only in Docker, which is
   not here. Instead the function's own deployment package (the zip ``chalice deploy`` uploaded)
   is unpacked and its handler runs in a subprocess of this Python (3.12, the function's
   runtime), with the function's configured environment and credentials pointed back at this
   server, killed after the function's timeout. The package's modules come first on
   ``sys.path``, as ``/var/task`` does on Lambda; boto3 comes from this environment, as from the
   runtime. It answers as Lambda does: the handler's JSON, or an ``errorMessage``/``errorType``
   object with the invoke marked as a function error. S3's notifications invoke it as S3 does:
   asynchronously, once the object is whole (moto would invoke it mid-PUT, before the object has
   its metadata). Not proven: Amazon Linux, the memory limit, Lambda's retries of a failed
   asynchronous invoke and its ``OnFailure`` destination.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


# What a request made with boto3 to AWS carries, for fix 5 (condition keys are case-insensitive).
REQUEST_CONTEXT = {"aws:securetransport": "true"}


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """IAM's rule: every operator's every key must match one of its values. Only the operators
    deploy's bucket policies use are known; another one fails loudly."""
    for operator, keys in conditions.items():
        if operator not in ("Bool", "StringEquals"):
            raise NotImplementedError(f"the rehearsal's moto does not evaluate {operator} conditions")
        for key, values in keys.items():
            wanted = [str(v).lower() if operator == "Bool" else str(v) for v in _as_list(values)]
            if context.get(key.lower()) not in wanted:
                return False
    return True


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# Runs one invoke of a Lambda handler for fix 6: ``python -c RUN_HANDLER <task dir> <handler> <answer file>``,
# the event on stdin, the answer (or the error, as Lambda reports one) written to <answer file>.
RUN_HANDLER = """
import importlib, json, os, sys, time, traceback, uuid
task, handler, answer_file = sys.argv[1:4]
sys.path.insert(0, task)
os.chdir(task)
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    aws_request_id = str(uuid.uuid4())
    deadline = time.monotonic() + float(os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"])
    def get_remaining_time_in_millis(self):
        return max(0, int((self.deadline - time.monotonic()) * 1000))
try:
    module, _, name = handler.rpartition(".")
    answer = getattr(importlib.import_module(module), name)(json.load(sys.stdin), Context())
    with open(answer_file, "w") as out:
        json.dump(answer, out)
except Exception as error:
    traceback.print_exc()
    with open(answer_file, "w") as out:
        json.dump({"errorMessage": str(error), "errorType": type(error).__name__}, out)
    sys.exit(1)
"""


def _task_folder(code: bytes, folders: dict[str, Path]) -> Path:
    """The deployment package unpacked (once per distinct package), as Lambda's ``/var/task``."""
    digest = hashlib.sha256(code).hexdigest()
    if digest not in folders:
        folder = Path(tempfile.mkdtemp(prefix=f"lambda-{digest[:12]}-"))
        with zipfile.ZipFile(io.BytesIO(code)) as package:
            package.extractall(folder)
        folders[digest] = folder
    return folders[digest]


def run_functions(port: int) -> None:
    """Fix 6: Lambda ``Invoke`` runs the function's own package here (see the module docstring)."""
    from moto.awslambda.models import LambdaFunction

    folders: dict[str, Path] = {}

    def invoke_here(self: Any, event: Any = None) -> tuple[str, bool, str]:
        self.logs_backend.ensure_log_group(self.logs_group_name)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": tempfile.gettempdir(),
            **self.environment_vars,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        task = _task_folder(self.code_bytes, folders)
        with tempfile.TemporaryDirectory() as scratch:
            answer_file = Path(scratch) / "answer.json"
            process = subprocess.Popen(
                [sys.executable, "-c", RUN_HANDLER, str(task), self.handler, str(answer_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                logs, _ = process.communicate(json.dumps(event or {}).encode(), timeout=float(self.timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                logs, _ = process.communicate()
                answer = json.dumps({"errorMessage": f"Task timed out after {self.timeout} seconds"})
            else:
                answer = answer_file.read_text() if answer_file.exists() else ""
        errored = process.returncode != 0 or not answer
        text = logs.decode("utf-8", "replace")
        self.save_logs(text)
        return answer or json.dumps({"errorMessage": text[-1000:] or "the function died"}), errored, text

    LambdaFunction._invoke_lambda = invoke_here  # type: ignore[method-assign]

    # S3 notifies a function asynchronously, once the object is whole; moto invokes it in the
    # middle of the PUT, before it sets the object's metadata and tags. Here the invokes a request
    # causes start, each in its own thread, once moto has finished that request.
    from moto.s3 import notifications
    from moto.s3.responses import S3Response

    caused = threading.local()
    invoke_now = notifications._invoke_awslambda

    def start(*call: Any) -> None:
        threading.Thread(target=invoke_now, args=call, daemon=True).start()

    def invoke_after_the_request(*call: Any) -> None:
        if getattr(caused, "calls", None) is None:
            start(*call)
        else:
            caused.calls.append(call)

    def then_notify(respond: Any) -> Any:
        def respond_then_notify(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(caused, "calls", None) is not None:  # within a request already
                return respond(self, *args, **kwargs)
            caused.calls = []
            try:
                return respond(self, *args, **kwargs)
            finally:
                calls, caused.calls = caused.calls, None
                for call in calls:
                    start(*call)

        return respond_then_notify

    notifications._invoke_awslambda = invoke_after_the_request
    S3Response.key_response = then_notify(S3Response.key_response)  # type: ignore[method-assign]
    S3Response.bucket_response = then_notify(S3Response.bucket_response)  # type: ignore[method-assign]


def patch_moto() -> None:
    """Apply fixes 1 to 5 above to moto's classes in this process."""
    from moto.apigateway.models import APIGatewayBackend
    from moto.cloudfront.models import Origin
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket
    from moto.s3.responses import S3Response

    notification_config = S3Response._notification_config_from_body

    def lower_case_filter_names(self: Any) -> dict[str, Any]:
        body = self.body.decode() if isinstance(self.body, bytes) else self.body
        self.body = re.sub(r"<Name>(Prefix|Suffix)</Name>", lambda m: f"<Name>{m[1].lower()}</Name>", body)
        result: dict[str, Any] = notification_config(self)
        return result

    import_rest_api = APIGatewayBackend.import_rest_api
    put_rest_api = APIGatewayBackend.put_rest_api

    def as_openapi3(document: dict[str, Any]) -> dict[str, Any]:
        if "swagger" not in document:
            return document
        relabelled = {k: v for k, v in document.items() if k != "swagger"}
        return {**relabelled, "openapi": "3.0.1"}

    def import_without_description(self: Any, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
        info = {"description": "", **api_doc.get("info", {})}
        return import_rest_api(self, {**as_openapi3(api_doc), "info": info}, fail_on_warnings)

    def put_swagger(
        self: Any, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool, mode: str = "merge"
    ) -> Any:
        return put_rest_api(self, function_id, as_openapi3(api_doc), fail_on_warnings, mode)

    origin_init = Origin.__init__

    def keep_access_control(self: Any, origin: dict[str, Any]) -> None:
        origin_init(self, origin)
        self.origin_access_control_id = origin.get("OriginAccessControlId", "")
        if "S3OriginConfig" in origin:
            self.s3_origin_config = origin["S3OriginConfig"]

    def permission_when_conditions_hold(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        document = json.loads(self.policy)
        statements = (
            document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
        )
        applicable = [st for st in statements if _conditions_hold(st.get("Condition", {}), REQUEST_CONTEXT)]
        return IAMPolicy(json.dumps({**document, "Statement": applicable})).is_action_permitted(
            action, resource
        )

    FakeBucket.get_permission = permission_when_conditions_hold  # type: ignore[method-assign]
    S3Response._notification_config_from_body = lower_case_filter_names  # type: ignore[method-assign]
    APIGatewayBackend.import_rest_api = import_without_description  # type: ignore[method-assign]
    APIGatewayBackend.put_rest_api = put_swagger  # type: ignore[method-assign]
    Origin.__init__ = keep_access_control  # type: ignore[method-assign]


# What a user checks out and `make deploy` reads (tests, docs and the rest are not needed).
PROJECT = ("Makefile", "app.py", "chalicelib", "tools", "vendor", "requirements.txt",
           "requirements-dev.txt", "constraints.txt", "pyproject.toml")  # fmt: skip


def copy_project(project: Path) -> Path:
    """A user's checkout of this project at ``project``, for ``make deploy``: the files it reads,
    the stages' configuration and policies, and this virtualenv (linked, installed already)."""
    (project / ".chalice").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, project / name)  # mtimes kept: make compares them
    for source in [ROOT / ".chalice" / "config.json", *(ROOT / ".chalice").glob("policy-*.json")]:
        shutil.copy2(source, project / ".chalice" / source.name)
    (project / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return project


class MotoServer:
    """``python -m tests.moto_server`` in a subprocess on ``port``; stopped by ``stop()``."""

    def __init__(self, port: int, log: Path, *, run_functions: bool = False) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.moto_server", "--port", str(port)]
            + (["--run-functions"] if run_functions else []),
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(log.parent)},  # the functions' unpacked packages go there
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}: see {log}")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=2)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start in 60 s: see {log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Close its stdin (it exits), or terminate it."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-functions", action="store_true", help="fix 6: Lambda Invoke runs the package")
    args = parser.parse_args(argv)
    patch_moto()
    if args.run_functions:
        run_functions(args.port)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print(f"moto on http://127.0.0.1:{args.port}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
