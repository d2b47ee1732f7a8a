"""moto's server for the deploy rehearsal, with five fixes where moto 5.2.5 is not AWS.

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
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
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


def patch_moto() -> None:
    """Apply the five fixes above to moto's classes in this process."""
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


class MotoServer:
    """``python -m tests.moto_server`` in a subprocess on ``port``; stopped by ``stop()``."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.moto_server", "--port", str(port)],
            cwd=ROOT,
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
    args = parser.parse_args(argv)
    patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print(f"moto on http://127.0.0.1:{args.port}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
