"""The docs' examples that need an AWS account, run as printed against moto's server.

``tests/test_docs.py`` runs every other block of README.md and docs/*.md against the local
stack; the blocks marked ``<!-- docs-test: needs-aws -->`` (deploy, destroy, the SSM secrets,
invoking the operations function) run here, in the deploy rehearsal's harness: a copy of the
project (``tests.moto_server.copy_project``), the real Makefile targets, the real ``chalice
deploy``, the real AWS CLI, and moto's server as the account (``tests/moto_server.py``, with its
fix 6: a Lambda invoke runs the deployed function's own package).

**A reader per file.** The needs-aws blocks of one file run in order, in one copy of the project,
against an account that is empty when the file starts (moto is reset between files), so each file
must work for a reader who follows it from its start. The reader's shell has what the docs ask
for before the first block: credentials (``aws configure``'s, here ``testing``), the region
``AWS_DEFAULT_REGION=us-east-1`` (as docs/deploy.md exports it), ``aws`` and ``imageshelf`` on
``PATH``, and ``AWS_ENDPOINT_URL`` naming moto's server: the one difference from a real account.

**What the prose asks for.** Some blocks follow prose that asks the reader to do something that is
not a command (edit a file, have a stage deployed). ``PREPARATIONS`` does exactly that before the
block it names; a preparation whose block is gone fails, so none goes stale silently.

**What a block must do:** exit 0; print no JSON that does not parse; print no API error
(``{"error": {...}}``), no S3 error and no Lambda function error (``FunctionError``, or an
``errorMessage`` answer). What moto cannot prove is in docs/deploy.md, "What the rehearsal proves".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.docblocks import Block, api_errors, collect, json_values, s3_errors
from tests.moto_server import MotoServer, copy_project
from tools.stack import free_port

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
REGION = "us-east-1"
BLOCK_TIMEOUT = 300  # seconds; a block of several deploys takes about half a minute here

ALL_BLOCKS, PROBLEMS = collect(ROOT)
BLOCKS = [b for b in ALL_BLOCKS if b.marker == "needs-aws"]


# --- what the prose asks the reader to do before a block --------------------------------------


def deploy_prod(work: Path, shell: Callable[[str], None]) -> None:
    """docs/api.md's operations examples call a deployed ``prod`` stage, as their prose says."""
    shell("make deploy STAGE=prod")


def opt_dev_in_to_an_upload_token(work: Path, shell: Callable[[str], None]) -> None:
    """docs/deploy.md, "Closing uploads to the public", steps 1 to 3: the setting, the policy
    statement (taken from the doc's own IAM example), then ``make deploy``."""
    config_file = work / ".chalice" / "config.json"
    config = json.loads(config_file.read_text())
    config["stages"]["dev"]["environment_variables"]["UPLOAD_TOKEN_PARAMETER"] = (
        "/imageshelf/dev/upload-token"
    )
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    statement = next(
        json.loads(b.text.replace("<stage>", "dev"))
        for b in ALL_BLOCKS
        if str(b.path) == "docs/deploy.md" and b.lang == "json" and '"ReadUploadToken"' in b.text
    )
    policy_file = work / ".chalice" / "policy-dev-api_handler.json"
    policy = json.loads(policy_file.read_text())
    policy["Statement"].append(statement)
    policy_file.write_text(json.dumps(policy, indent=2) + "\n")
    shell("make deploy STAGE=dev")


# (doc, the block's first line) -> what the reader did before it, by the prose's instructions.
PREPARATIONS: dict[tuple[str, str], Callable[[Path, Callable[[str], None]], None]] = {
    (
        "docs/api.md",
        """echo '{"operation": "thumbnail", "id": "sample", "format": "webp"}' > event.json""",
    ): deploy_prod,
    ("docs/deploy.md", "make upload-token STAGE=dev"): opt_dev_in_to_an_upload_token,
}


def first_line(block: Block) -> str:
    return block.text.strip().splitlines()[0].strip()


# --- the account and the reader ---------------------------------------------------------------


@dataclass
class Account:
    """moto's server as a reader's AWS account, and each doc file's reader (a project copy)."""

    moto: MotoServer
    tmp: Path
    readers: dict[str, Path] = field(default_factory=dict)

    def reader(self, doc: str) -> Path:
        """The folder a reader of ``doc`` works in; the first call for a doc empties the account."""
        if doc not in self.readers:
            requests.post(f"{self.moto.url}/moto-api/reset", timeout=30).raise_for_status()
            folder = self.tmp / doc.replace("/", "_")
            work = copy_project(folder / "work")
            (folder / "home").mkdir()
            (folder / "bin").mkdir()
            for name in ("aws", "imageshelf"):
                (folder / "bin" / name).symlink_to(VENV / "bin" / name)
            self.readers[doc] = work
        return self.readers[doc]

    def env(self, work: Path) -> dict[str, str]:
        return {
            "HOME": str(work.parent / "home"),
            "PATH": f"{work.parent / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": str(self.tmp),
            "TERM": "dumb",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def run(self, work: Path, command: list[str], given: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=work,
            env=self.env(work),
            input=given,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Account]:
    tmp = tmp_path_factory.mktemp("docs-aws")
    moto = MotoServer(free_port(), tmp / "moto.log", run_functions=True)
    try:
        yield Account(moto, tmp)
    finally:
        moto.stop()


def function_errors(values: list[Any]) -> list[str]:
    """Lambda's function errors among printed JSON: the CLI's ``FunctionError``, or an answer that
    is an ``errorMessage`` (what a handler's exception or timeout returns)."""
    found = []
    for value in values:
        if isinstance(value, dict) and "FunctionError" in value:
            found.append(f"FunctionError {value['FunctionError']}")
        if isinstance(value, dict) and "errorMessage" in value:
            found.append(f"{value.get('errorType', 'error')}: {value['errorMessage']}")
    return found


def report(block: Block, result: subprocess.CompletedProcess[str], problem: str) -> str:
    return (
        f"{block.where}: {problem}\n--- the block, as run (against moto's server)\n{block.text}"
        f"--- exit status {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block(block: Block, account: Account) -> None:
    doc = str(block.path)
    work = account.reader(doc)
    prepare = PREPARATIONS.get((doc, first_line(block)))
    if prepare:

        def shell(command: str) -> None:
            done = account.run(work, ["bash", "-euo", "pipefail", "-c", command])
            assert done.returncode == 0, f"preparing {block.where}: {command}\n{done.stdout}{done.stderr}"

        prepare(work, shell)
    if block.lang in ("sh", "bash", "shell"):
        script = account.tmp / f"{doc.replace('/', '_')}_line{block.line}.sh"
        script.write_text(block.text, encoding="utf-8")
        result = account.run(work, ["bash", "-e", "-u", "-o", "pipefail", str(script)])
    else:
        assert block.lang in ("python", "py"), f"{block.where}: a needs-aws ```{block.lang} block"
        result = account.run(work, [str(VENV / "bin" / "python"), "-"], given=block.text)

    def check(ok: object, problem: str) -> None:
        if not ok:
            pytest.fail(report(block, result, problem), pytrace=False)

    check(result.returncode == 0, f"exited with {result.returncode}")
    values, broken = json_values(result.stdout)
    check(not broken, f"printed JSON that does not parse: {broken[:3]}")
    check(not api_errors(values), f"the API answered with an error: {api_errors(values)}")
    check(not s3_errors(result.stdout), f"S3 answered with an error: {s3_errors(result.stdout)}")
    check(not function_errors(values), f"a Lambda function failed: {function_errors(values)}")


def test_every_preparation_names_a_block_that_is_there() -> None:
    assert not PROBLEMS, PROBLEMS
    present = {(str(b.path), first_line(b)) for b in BLOCKS}
    assert set(PREPARATIONS) <= present, sorted(set(PREPARATIONS) - present)
    assert {str(b.path) for b in BLOCKS} >= {"README.md", "docs/deploy.md", "docs/api.md"}


def test_a_function_error_fails_the_block() -> None:
    """What the CLI prints when the deployed function raised: the block fails, not passes."""
    printed = (
        '{"errorMessage": "boom", "errorType": "KeyError"}\n{"StatusCode": 200, "FunctionError": "Unhandled"}'
    )
    assert function_errors(json_values(printed)[0]) == ["KeyError: boom", "FunctionError Unhandled"]
    assert function_errors(json_values('{"url": "https://x/y"}\n{"StatusCode": 200}')[0]) == []
