"""The OpenAPI document of the JSON API, served at ``GET /openapi.json``.

``openapi.yaml`` at the repository root is the source people edit. The Lambda serves
``chalicelib/openapi.json``, a JSON copy made by ``python -m chalicelib.openapi``, so the
API function needs no YAML parser; a test checks that the two say the same.
"""

from __future__ import annotations

import copy
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import Settings

JSON_PATH = Path(__file__).resolve().parent / "openapi.json"
YAML_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@lru_cache(maxsize=1)
def _stored() -> dict[str, Any]:
    return json.loads(JSON_PATH.read_text(encoding="utf-8"))


def document(settings: Settings) -> dict[str, Any]:
    """The document for this deployment: the stored one, with its configured upload limit."""
    doc = copy.deepcopy(_stored())
    doc["components"]["schemas"]["UploadRequest"]["properties"]["size"]["maximum"] = settings.max_upload_bytes
    return doc


def from_yaml(path: Path = YAML_PATH) -> dict[str, Any]:
    """``openapi.yaml`` parsed (needs PyYAML: a development dependency, not a Lambda one)."""
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def json_text(doc: dict[str, Any]) -> str:
    """The JSON copy's exact text."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m chalicelib.openapi``: rewrite the JSON copy from ``openapi.yaml``."""
    args = sys.argv[1:] if argv is None else argv
    text = json_text(from_yaml())
    if args == ["--check"]:
        if JSON_PATH.read_text(encoding="utf-8") != text:
            print(f"{JSON_PATH} is out of date: run python -m chalicelib.openapi", file=sys.stderr)
            return 1
        return 0
    JSON_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
