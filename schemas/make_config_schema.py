"""Write ``schemas/config.schema.json`` from :class:`cronmetrics.config.Config`.

    python3 schemas/make_config_schema.py          # rewrite the file
    python3 schemas/make_config_schema.py --check  # exit 1 if the file is stale

``tests/test_schema.py`` runs the check, so the published schema cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cronmetrics.config import Config

TARGET = Path(__file__).with_name("config.schema.json")


def build() -> dict[str, Any]:
    schema = Config.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/cronmetrics/cronmetrics/schemas/config.schema.json",
        **schema,
        "title": "cronmetrics configuration",
        "description": (
            "The --config file (docs/configuration.md); every key can "
            "also be set as CRONMETRICS_<KEY> (nested: CRONMETRICS_LOG__LEVEL)."
        ),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run python3 {__file__}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
