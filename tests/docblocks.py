"""The fenced code blocks of the Markdown docs, and the referee that judges what running them did.

Used by ``tests/test_docs.py`` (its docstring says how blocks are marked and run):

- :func:`collect` gathers every doc file's blocks; :func:`extract` reads one Markdown file's
  fenced blocks with their line numbers, info strings and ``<!-- docs-test: ... -->`` markers;
- :func:`localize` is the one place where a block's text is changed before it runs: the
  documented addresses of ``make run`` become those of the stack under test;
- :func:`json_values`, :func:`api_errors` and :func:`s3_errors` read what a block printed;
- :class:`S3Referee` checks the presigned requests a block sent to the embedded S3 as real S3
  would (moto checks neither signatures nor POST policies), from moto's request recording.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER_KINDS = {"skip", "needs-aws"}
SHELL = {"sh", "bash", "shell"}
PYTHON = {"python", "py"}
DATA = {"json"}
TEXT = {"", "text"}
# An untagged block that reads like something to type is a command that escaped the tests.
LOOKS_LIKE_A_COMMAND = re.compile(
    r"^\s*(\$ |make |curl |aws |pip |python|chalice |\.venv/|"
    r"imageshelf (upload|import|list|get|delete)\b)",
    re.MULTILINE,
)

# What `make run` prints and the docs use, and the fixed credentials tools/devserver.py signs with.
DOCUMENTED_API = "127.0.0.1:8000"
DOCUMENTED_S3 = "127.0.0.1:9000"
LOCAL_SECRETS = {"imageshelf-local": "imageshelf-local"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its info string's first word, its text, its marker."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None = None  # "skip" or "needs-aws"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """``shell``, ``python`` (run), ``json`` (parsed), ``text`` (read), ``marked`` or ``unknown``."""
        if self.marker:
            return "marked"
        if self.lang in SHELL:
            return "shell"
        if self.lang in PYTHON:
            return "python"
        if self.lang in DATA:
            return "json"
        if self.lang in TEXT:
            return "text"
        return "unknown"


class MarkdownError(ValueError):
    """A marker that is malformed or not followed by a block, or a fence that is never closed."""


def extract(path: Path, root: Path | None = None) -> list[Block]:
    """Every fenced block of a Markdown file, in order, each with the marker right before it.

    A marker is an HTML comment (invisible when rendered) on the last non-blank line before the
    opening fence. ``root`` makes the blocks' paths relative, for messages.
    """
    shown = path.relative_to(root) if root else path
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str, str] | None = None  # a marker waiting for its block
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line)
        if "docs-test" in line and "<!--" in line:
            if not marker:
                raise MarkdownError(f"{shown}:{index + 1}: malformed marker {line.strip()!r}")
            if marker["kind"] not in MARKER_KINDS:
                raise MarkdownError(
                    f"{shown}:{index + 1}: unknown marker {marker['kind']!r} (known: {sorted(MARKER_KINDS)})"
                )
            if marker["kind"] == "skip" and not marker["reason"]:
                raise MarkdownError(f"{shown}:{index + 1}: 'docs-test: skip' needs a reason")
            pending = (index + 1, marker["kind"], marker["reason"])
            index += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if line.strip() and pending:
                raise MarkdownError(f"{shown}:{pending[0]}: marker not followed by a code block")
            index += 1
            continue
        # A fence indented in a list item: its lines lose that indentation, and no more.
        start, indent, mark = index, len(fence["indent"]), fence["fence"]
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if (
                closing
                and closing["fence"][0] == mark[0]
                and len(closing["fence"]) >= len(mark)
                and not closing["info"].strip()
            ):
                break
            text = lines[index]
            body.append(text[indent:] if not text[:indent].strip() else text.lstrip())
            index += 1
        else:
            raise MarkdownError(f"{shown}:{start + 1}: code block never closed")
        info = fence["info"].strip().split()
        blocks.append(
            Block(
                path=shown,
                line=start + 1,
                lang=info[0].lower() if info else "",
                text="\n".join(body) + "\n",
                marker=pending[1] if pending else None,
                reason=pending[2] if pending else "",
            )
        )
        pending = None
        index += 1
    if pending:
        raise MarkdownError(f"{shown}:{pending[0]}: marker not followed by a code block")
    return blocks


def doc_files(root: Path) -> list[Path]:
    """The Markdown a user reads: the README, then docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def collect(root: Path) -> tuple[list[Block], list[str]]:
    """Every block of every doc file under ``root``, and what is malformed in them."""
    blocks: list[Block] = []
    problems: list[str] = []
    for path in doc_files(root):
        try:
            blocks.extend(extract(path, root))
        except MarkdownError as error:
            problems.append(str(error))
    return blocks, problems


def localize(text: str, api_url: str, s3_url: str) -> str:
    """The block as it runs: the documented ``127.0.0.1:8000`` and ``127.0.0.1:9000`` become the
    addresses of the stack under test (which listens on free ports). Nothing else changes."""
    api, s3 = urlsplit(api_url).netloc, urlsplit(s3_url).netloc
    return text.replace(DOCUMENTED_API, api).replace(DOCUMENTED_S3, s3)


def json_values(output: str) -> tuple[list[Any], list[str]]:
    """The JSON values a command printed (several may follow each other, as curl prints them),
    and the lines that start like JSON (``{`` or ``[``) but do not parse."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    broken: list[str] = []
    position = 0
    while position < len(output):
        while position < len(output) and output[position].isspace():
            position += 1
        if position >= len(output):
            break
        line_end = output.find("\n", position)
        line_end = len(output) if line_end < 0 else line_end
        if output[position] in "{[":
            try:
                value, position = decoder.raw_decode(output, position)
            except ValueError:
                broken.append(output[position:line_end])
                position = line_end
            else:
                values.append(value)
            continue
        position = line_end
    return values, broken


def api_errors(values: list[Any]) -> list[str]:
    """The API's error answers (``{"error": {"code", "message"}}``) among printed JSON values."""
    found = []
    for value in values:
        error = value.get("error") if isinstance(value, dict) else None
        if isinstance(error, dict) and "code" in error:
            found.append(f"{error.get('code')}: {error.get('message')}")
    return found


def s3_errors(output: str) -> list[str]:
    """S3's XML error answers in a command's output."""
    return [
        f"{m['code']}: {m['message'] or ''}".strip()
        for m in re.finditer(
            r"<Error>\s*<Code>(?P<code>[^<]*)</Code>(?:\s*<Message>(?P<message>[^<]*)</Message>)?", output
        )
    ]


def parse_json_block(text: str) -> Any:
    """A ``json`` block is a JSON value, or the members of an object (a fragment to paste into one)."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads("{" + text.strip().rstrip(",") + "}")


# --- what real S3 would check -------------------------------------------------------------------


def _signing_key(secret: str, scope: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def check_presigned_url(method: str, url: str, headers: dict[str, str]) -> str | None:
    """Why real S3 would refuse this query-signed (presigned) request, or None if it would accept it.

    Recomputes the SigV4 query signature over what was actually sent: the method, path, query and
    the signed headers' values (``Content-Length`` and ``Content-Type`` among them for a PUT).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return f"unsupported X-Amz-Algorithm {params.get('X-Amz-Algorithm')!r}"
    access_key, _, scope = params.get("X-Amz-Credential", "").partition("/")
    secret = LOCAL_SECRETS.get(access_key)
    if secret is None:
        return f"signed with unknown credentials {access_key!r}"
    lowered = {name.lower(): value for name, value in headers.items()}
    signed = params.get("X-Amz-SignedHeaders", "").split(";")
    missing = [name for name in signed if name not in lowered]
    if missing:
        return f"the request lacks the signed header(s) {', '.join(missing)}"
    canonical_headers = "".join(f"{name}:{' '.join(lowered[name].split())}\n" for name in signed)
    canonical_query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query) if k != "X-Amz-Signature"
    )
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            canonical_query,
            canonical_headers,
            ";".join(signed),
            params.get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"),
        ]
    )
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params.get("X-Amz-Date", ""),
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    expected = hmac.new(_signing_key(secret, scope), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):
        sent = ", ".join(f"{name}: {lowered[name]}" for name in signed if name != "host")
        return (
            "SignatureDoesNotMatch: the request differs from what was signed "
            f"(sent {sent}; compare with the grant's headers)"
        )
    return None


def _form_fields(content_type: str, body: bytes) -> tuple[dict[str, str], int | None, bool]:
    """A multipart form's fields, the size of its part named ``file``, and whether that part is last."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    size = None
    last = ""
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if name == "file":
            size = len(payload)
        elif name:
            fields[name] = payload.decode("utf-8")
        last = name
    return fields, size, last == "file"


def check_presigned_post(url: str, headers: dict[str, str], body: bytes) -> str | None:
    """Why real S3 would refuse this browser-style form POST, or None if it would accept it.

    Checks the policy's signature and every condition against the fields and the file sent, the
    file last, and that every field is covered by a condition (S3's rules for POST uploads).
    """
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    fields, size, file_last = _form_fields(content_type, body)
    lowered = {name.lower(): value for name, value in fields.items()}
    if size is None:
        return "the form has no part named 'file'"
    if not file_last:
        return "InvalidArgument: the file must be the form's last part"
    policy_b64 = lowered.get("policy", "")
    access_key, _, scope = lowered.get("x-amz-credential", "").partition("/")
    secret = LOCAL_SECRETS.get(access_key)
    if secret is None:
        return f"signed with unknown credentials {access_key!r}"
    expected = hmac.new(_signing_key(secret, scope), policy_b64.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, lowered.get("x-amz-signature", "")):
        return "SignatureDoesNotMatch: the policy or its signature was changed"
    policy = json.loads(base64.b64decode(policy_b64))
    bucket = unquote(urlsplit(url).path).strip("/").split("/")[0]
    values = {**lowered, "bucket": bucket}
    covered = {"policy", "x-amz-signature", "file"}
    for condition in policy.get("conditions", []):
        if isinstance(condition, dict):
            (name, wanted), op = next(iter(condition.items())), "eq"
        elif condition[0] == "content-length-range":
            if not condition[1] <= size <= condition[2]:
                return f"EntityTooLarge/Small: {size} bytes, outside {condition[1]}..{condition[2]}"
            continue
        else:
            op, name, wanted = condition[0], condition[1].lstrip("$"), condition[2]
        name = name.lower()
        covered.add(name)
        got = values.get(name)
        if got is None or (got != wanted if op == "eq" else not got.startswith(wanted)):
            return f"AccessDenied: policy condition failed: {condition!r} (sent {got!r})"
    uncovered = sorted(n for n in lowered if n not in covered and not n.startswith("x-ignore-"))
    if uncovered:
        return f"AccessDenied: form fields not covered by the policy: {uncovered}"
    return None


class S3Referee:
    """Reads moto's request recording (``MOTO_ENABLE_RECORDING``) as it grows and judges each
    presigned request (query-signed URL or form POST) as real S3 would."""

    def __init__(self, recording: Path) -> None:
        self.recording = recording
        self.offset = 0
        self.checked = 0

    def _new_requests(self) -> list[dict[str, Any]]:
        if not self.recording.exists():
            return []
        with self.recording.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # a request being written now is judged next time
        self.offset += end
        decoder = json.JSONDecoder()
        found = []
        # Threads of the embedded S3 append to the file concurrently: a line may hold two requests.
        for line in data[:end].decode("utf-8", "replace").splitlines():
            position = 0
            while position < len(line):
                try:
                    entry, position = decoder.raw_decode(line, position)
                except ValueError:
                    break
                found.append(entry)
        return found

    def skip_to_end(self) -> None:
        self._new_requests()

    def judge(self) -> list[str]:
        """What real S3 would have refused among the requests recorded since the last call."""
        refusals = []
        for entry in self._new_requests():
            method, url, headers = entry["method"], entry["url"], entry.get("headers") or {}
            body = entry.get("body") or ""
            data = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
            verdict = None
            if "X-Amz-Signature=" in url:
                verdict = check_presigned_url(method, url, headers)
            elif method == "POST" and b'name="policy"' in data:
                verdict = check_presigned_post(url, headers, data)
            else:
                continue
            self.checked += 1
            if verdict:
                refusals.append(f"{method} {urlsplit(url).path}: {verdict}")
        return refusals
