"""schemas/job.schema.json and the pydantic model accept and reject the same documents.

Each case is a JSON-compatible document (what an editor's YAML language server hands a
JSON Schema validator). Checks JSON Schema cannot express are listed separately as
model-only cases.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cronmetrics.config import Config
from cronmetrics.errors import ValidationError
from cronmetrics.jobs.model import JobDefinition, parse_job
from cronmetrics.jobs.repository import iter_job_files
from cronmetrics.jobs.yamlio import load_fast

REPO_ROOT = Path(__file__).resolve().parent.parent

JOB_SCHEMA = json.loads((REPO_ROOT / "schemas" / "job.schema.json").read_text())
CONFIG_SCHEMA = json.loads((REPO_ROOT / "schemas" / "config.schema.json").read_text())
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


def schema_accepts(doc: Any) -> bool:
    return _validator(JOB_SCHEMA).is_valid(doc)


def model_accepts(doc: Any) -> bool:
    try:
        parse_job(doc)
    except ValidationError:
        return False
    return True


def job(**fields: Any) -> dict[str, Any]:
    return {"job_name": "backup", "automatic_failure_threshold": 3600, **fields}


def _labels(count: int) -> dict[str, str]:
    return {f"l{i}": "v" for i in range(count)}


WINDOW = {"schedule": "0 2 * * SUN", "duration": 7200}

# (id, document, valid)
CASES: list[tuple[str, Any, bool]] = [
    # -- valid ---------------------------------------------------------------------------
    ("minimal-threshold", {"job_name": "a", "automatic_failure_threshold": 60}, True),
    ("minimal-schedule", {"job_name": "a", "schedule": "30 2 * * *"}, True),
    ("threshold-and-schedule", job(schedule="*/15 * * * MON-FRI"), True),
    (
        "every-key",
        {
            "job_name": "db_import",
            "host": "backup3",
            "automatic_failure_threshold": 3600,
            "schedule": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "grace": 900,
            "max_runtime": 1800,
            "labels": {"env": "stage", "team": "migration"},
            "status": "maintenance",
            "maintenance_until": "2026-12-01T00:00:00Z",
            "maintenance_windows": [
                {"schedule": "0 2 * * SUN", "duration": 7200, "timezone": "Europe/Berlin"}
            ],
            "description": "Nightly import of the billing DB",
        },
        True,
    ),
    ("host-ip-address", job(host="10.0.0.1"), True),
    ("host-fqdn", job(host="db-1.example.internal"), True),
    ("name-dots-dashes", job(job_name="_nightly.db-import"), True),
    ("name-128-chars", job(job_name="a" * 128), True),
    ("schedule-alias", {"job_name": "a", "schedule": "@daily"}, True),
    ("grace-zero", job(grace=0), True),
    ("threshold-ten-years", job(automatic_failure_threshold=316224000), True),
    ("threshold-integral-float", job(automatic_failure_threshold=3600.0), True),
    ("labels-empty", job(labels={}), True),
    ("labels-twenty", job(labels=_labels(20)), True),
    ("label-value-empty", job(labels={"env": ""}), True),
    ("label-name-64-chars", job(labels={"a" * 64: "x"}), True),
    ("status-paused", job(status="paused"), True),
    ("status-retired", job(status="retired"), True),
    ("until-offset", job(maintenance_until="2026-12-01T02:00:00+02:00"), True),
    ("until-fraction", job(maintenance_until="2026-12-01T00:00:00.250Z"), True),
    ("until-date", job(maintenance_until="2026-12-01"), True),
    ("windows-empty", job(maintenance_windows=[]), True),
    ("windows-null", job(maintenance_windows=None), True),
    (
        "window-without-timezone",
        job(maintenance_windows=[{"schedule": "0 2 * * SUN", "duration": 7200}]),
        True,
    ),
    (
        "window-timezone-null",
        job(maintenance_windows=[{**WINDOW, "timezone": None}]),
        True,
    ),
    (
        "windows-twenty",
        job(maintenance_windows=[{"schedule": "0 2 * * SUN", "duration": 7200}] * 20),
        True,
    ),
    ("optional-keys-null", job(host=None, max_runtime=None, description=None), True),
    ("description-1000-chars", job(description="x" * 1000), True),
    # -- invalid ---------------------------------------------------------------------------
    ("top-level-list", [job()], False),
    ("top-level-string", "job_name: a", False),
    ("missing-job-name", {"automatic_failure_threshold": 60}, False),
    ("neither-threshold-nor-schedule", {"job_name": "a"}, False),
    ("both-deadlines-null", job(automatic_failure_threshold=None, schedule=None), False),
    ("unknown-key", job(treshold=5), False),
    ("name-empty", job(job_name=""), False),
    ("name-leading-digit", job(job_name="1job"), False),
    ("name-slash", job(job_name="team/backup"), False),
    ("name-dot-dot", job(job_name="a..b"), False),
    ("name-space", job(job_name="db import"), False),
    ("name-trailing-newline", job(job_name="backup\n"), False),
    ("name-129-chars", job(job_name="a" * 129), False),
    ("name-number", job(job_name=123), False),
    ("host-slash", job(host="db/1"), False),
    ("host-dot-dot", job(host=".."), False),
    ("host-leading-dash", job(host="-db1"), False),
    ("host-254-chars", job(host="h" * 254), False),
    ("threshold-zero", job(automatic_failure_threshold=0), False),
    ("threshold-negative", job(automatic_failure_threshold=-5), False),
    ("threshold-too-large", job(automatic_failure_threshold=316224001), False),
    ("threshold-string", job(automatic_failure_threshold="3600"), False),
    ("threshold-fraction", job(automatic_failure_threshold=3600.5), False),
    ("threshold-boolean", job(automatic_failure_threshold=True), False),
    ("grace-negative", job(grace=-1), False),
    ("grace-null", job(grace=None), False),
    ("max-runtime-zero", job(max_runtime=0), False),
    ("schedule-empty", {"job_name": "a", "schedule": ""}, False),
    ("schedule-number", {"job_name": "a", "schedule": 5}, False),
    ("schedule-201-chars", {"job_name": "a", "schedule": "*" * 201}, False),
    ("timezone-empty", job(timezone=""), False),
    ("timezone-null", job(timezone=None), False),
    ("labels-list", job(labels=["env=prod"]), False),
    ("labels-null", job(labels=None), False),
    ("label-value-number", job(labels={"env": 3}), False),
    ("label-value-boolean", job(labels={"prod": True}), False),
    ("label-value-null", job(labels={"env": None}), False),
    ("label-value-257-chars", job(labels={"env": "x" * 257}), False),
    ("label-name-leading-digit", job(labels={"1env": "a"}), False),
    ("label-name-dash", job(labels={"my-env": "a"}), False),
    ("label-name-double-underscore", job(labels={"__name__": "a"}), False),
    ("label-name-trailing-newline", job(labels={"env\n": "a"}), False),
    ("label-name-65-chars", job(labels={"a" * 65: "x"}), False),
    ("label-reserved-job-name", job(labels={"job_name": "a"}), False),
    ("label-reserved-host", job(labels={"host": "a"}), False),
    ("label-reserved-status", job(labels={"status": "a"}), False),
    ("label-reserved-reason", job(labels={"reason": "a"}), False),
    ("label-reserved-result", job(labels={"result": "a"}), False),
    ("label-reserved-job", job(labels={"job": "a"}), False),
    ("label-reserved-instance", job(labels={"instance": "a"}), False),
    ("labels-twenty-one", job(labels=_labels(21)), False),
    ("status-capitalised", job(status="Active"), False),
    ("status-unknown", job(status="disabled"), False),
    ("status-null", job(status=None), False),
    ("until-words", job(maintenance_until="tomorrow"), False),
    ("until-no-offset", job(maintenance_until="2026-12-01T00:00:00"), False),
    ("until-space-separator", job(maintenance_until="2026-12-01 00:00:00Z"), False),
    ("until-month-13", job(maintenance_until="2026-13-01T00:00:00Z"), False),
    ("until-february-30", job(maintenance_until="2026-02-30"), False),
    ("until-epoch-number", job(maintenance_until=1700000000), False),
    ("until-epoch-string", job(maintenance_until="1700000000"), False),
    (
        "windows-twenty-one",
        job(maintenance_windows=[{"schedule": "0 2 * * SUN", "duration": 7200}] * 21),
        False,
    ),
    (
        "windows-mapping",
        job(maintenance_windows={"schedule": "0 2 * * SUN", "duration": 7200}),
        False,
    ),
    (
        "window-unknown-key",
        job(maintenance_windows=[{**WINDOW, "length": 5}]),
        False,
    ),
    ("window-no-duration", job(maintenance_windows=[{"schedule": "0 2 * * *"}]), False),
    ("window-no-schedule", job(maintenance_windows=[{"duration": 60}]), False),
    (
        "window-duration-zero",
        job(maintenance_windows=[{**WINDOW, "duration": 0}]),
        False,
    ),
    (
        "window-duration-string",
        job(maintenance_windows=[{**WINDOW, "duration": "2h"}]),
        False,
    ),
    (
        "window-schedule-empty",
        job(maintenance_windows=[{**WINDOW, "schedule": ""}]),
        False,
    ),
    (
        "window-timezone-empty",
        job(maintenance_windows=[{**WINDOW, "timezone": ""}]),
        False,
    ),
    ("description-1001-chars", job(description="x" * 1001), False),
    ("description-number", job(description=42), False),
]

# Semantic checks JSON Schema cannot express: the schema accepts these, the model must not.
MODEL_ONLY_INVALID: list[tuple[str, dict[str, Any]]] = [
    # cron syntax: a regular expression for every valid cron expression is not worth it
    ("cron-six-fields", {"job_name": "a", "schedule": "0 * * * * *"}),
    ("cron-minute-out-of-range", {"job_name": "a", "schedule": "61 * * * *"}),
    ("cron-unknown-alias", {"job_name": "a", "schedule": "@fortnightly"}),
    ("cron-nonstandard-L", {"job_name": "a", "schedule": "0 0 L * *"}),
    ("cron-garbage", {"job_name": "a", "schedule": "every day"}),
    # IANA time zone existence depends on the tz database installed
    ("timezone-unknown", job(timezone="Mars/Olympus_Mons")),
    ("timezone-path-escape", job(timezone="../etc/passwd")),
    ("window-cron-garbage", job(maintenance_windows=[{"schedule": "sundays", "duration": 60}])),
    (
        "window-timezone-unknown",
        job(maintenance_windows=[{"schedule": "@daily", "duration": 60, "timezone": "Mars/X"}]),
    ),
]


def test_corpus_is_large_and_balanced() -> None:
    assert len(CASES) >= 40
    assert sum(valid for *_, valid in CASES) >= 15
    assert sum(not valid for *_, valid in CASES) >= 25
    assert len({case_id for case_id, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize(("doc", "valid"), [(d, v) for _, d, v in CASES], ids=[c[0] for c in CASES])
def test_model_and_schema_agree(doc: Any, valid: bool) -> None:
    assert (schema_accepts(doc), model_accepts(doc)) == (valid, valid)


@pytest.mark.parametrize(
    "doc", [d for _, d in MODEL_ONLY_INVALID], ids=[c[0] for c in MODEL_ONLY_INVALID]
)
def test_semantic_checks_are_model_only(doc: dict[str, Any]) -> None:
    assert schema_accepts(doc)
    assert not model_accepts(doc)


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(JOB_SCHEMA)
    assert JOB_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_properties_are_the_model_fields() -> None:
    assert list(JOB_SCHEMA["properties"]) == list(JobDefinition.model_fields)


def test_schema_required_keys_are_the_model_required_fields() -> None:
    required = {name for name, f in JobDefinition.model_fields.items() if f.is_required()}
    assert set(JOB_SCHEMA["required"]) == required


def test_schema_defaults_are_the_model_defaults() -> None:
    for name, prop in JOB_SCHEMA["properties"].items():
        if "default" in prop:
            assert (
                JobDefinition.model_fields[name].get_default(call_default_factory=True)
                == (prop["default"])
            ), name


def test_schema_reserved_label_names_are_the_model_reserved_names() -> None:
    from cronmetrics.jobs.model import EXPORTER_LABELS

    branches = JOB_SCHEMA["properties"]["labels"]["propertyNames"]["not"]["anyOf"]
    enums = [b["enum"] for b in branches if "enum" in b]
    assert enums == [sorted(EXPORTER_LABELS, key=enums[0].index)]


def _jsonable(data: Any) -> Any:
    """What a YAML language server hands the schema: timestamps are strings."""
    if isinstance(data, dict):
        return {k: _jsonable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_jsonable(v) for v in data]
    if isinstance(data, dt.datetime):
        return data.isoformat().replace("+00:00", "Z") if data.tzinfo else data.isoformat() + "Z"
    if isinstance(data, dt.date):
        return data.isoformat()
    return data


@pytest.mark.parametrize(
    "path",
    sorted(iter_job_files(REPO_ROOT / "jobs.d")),
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_bundled_jobs_satisfy_schema_and_model(path: Path) -> None:
    doc = load_fast(path.read_text(encoding="utf-8"))
    assert model_accepts(doc)
    assert schema_accepts(_jsonable(doc))


# -- docs ----------------------------------------------------------------------------------


def test_every_schema_property_is_documented_in_docs_jobs_md() -> None:
    text = (REPO_ROOT / "docs" / "jobs.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^###\s+`([a-z_]+)`", text, re.MULTILINE))
    assert set(JOB_SCHEMA["properties"]) <= headings


# -- config.schema.json --------------------------------------------------------------------

TOKEN = {"name": "ops", "sha256": "ab" * 32, "scopes": ["admin", "read"]}
CONFIG_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("empty", {}, True),
    (
        "design-example",
        {
            "jobs_dir": "jobs.d",
            "state_dir": "/var/lib/cronmetrics",
            "bind": "0.0.0.0:9479",
            "tls": {"cert": "/etc/cronmetrics/tls.crt", "key": "/etc/cronmetrics/tls.key"},
            "auth": {"tokens": [TOKEN, {**TOKEN, "name": "b", "jobs": ["backup*"]}]},
            "snapshot": {"interval": 10, "journal": False},
            "retention": {"days": 30, "max_results_per_job": 100},
            "limits": {"max_body_bytes": 1048576, "max_output_bytes": 10000},
            "redact": ["(?i)(password|token|secret)=\\S+"],
            "unknown_jobs": "reject",
            "log": {"level": "info", "format": "json"},
        },
        True,
    ),
    ("bind-ipv6", {"bind": "[::1]:9479"}, True),
    ("unknown-key", {"jobs_dri": "x"}, False),
    ("unknown-nested-key", {"log": {"lvl": "info"}}, False),
    ("bind-without-port", {"bind": "localhost"}, False),
    ("token-bad-hash", {"auth": {"tokens": [{**TOKEN, "sha256": "xyz"}]}}, False),
    ("token-bad-scope", {"auth": {"tokens": [{**TOKEN, "scopes": ["root"]}]}}, False),
    ("token-no-scopes", {"auth": {"tokens": [{**TOKEN, "scopes": []}]}}, False),
    ("retention-days-zero", {"retention": {"days": 0}}, False),
    ("retention-days-string", {"retention": {"days": "30"}}, False),
    ("snapshot-interval-string", {"snapshot": {"interval": "10"}}, False),
    ("journal-string", {"snapshot": {"journal": "yes"}}, False),
    ("log-level-unknown", {"log": {"level": "verbose"}}, False),
    ("unknown-jobs-other", {"unknown_jobs": "ignore"}, False),
    ("tls-missing-key", {"tls": {"cert": "/c"}}, False),
]


def config_model_accepts(doc: dict[str, Any], tmp_path: Path) -> bool:
    from cronmetrics.errors import ConfigError

    try:
        Config(**{"state_dir": str(tmp_path / "state"), **doc})
    except Exception as exc:  # pydantic.ValidationError
        assert not isinstance(exc, ConfigError)
        return False
    return True


@pytest.fixture
def no_cronmetrics_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CRONMETRICS_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("doc", "valid"), [(d, v) for _, d, v in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
@pytest.mark.usefixtures("no_cronmetrics_env")
def test_config_model_and_config_schema_agree(
    doc: dict[str, Any], valid: bool, tmp_path: Path
) -> None:
    assert _validator(CONFIG_SCHEMA).is_valid(doc) is valid
    assert config_model_accepts(doc, tmp_path) is valid


def test_config_schema_is_generated_from_the_model() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "schemas" / "make_config_schema.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    jsonschema.Draft202012Validator.check_schema(CONFIG_SCHEMA)
