"""The decision request model that ``POST /v1/decisions`` and ``rtrace record --json`` share."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reasoning_trace import DecisionLog, RecordError
from reasoning_trace.request import FIELDS, DecisionRequest

from .test_cli_integrity import rtrace


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ([1, 2], "", "must be a JSON object"),
        ("text", "", "must be a JSON object"),
        ({"action": "a", "approved": True, "zz": 1, "aa": 2}, "aa", "unknown fields: aa, zz"),
        ({"approved": True}, "action", "required"),
        ({"action": "a"}, "approved", "required"),
        ({"action": "a", "approved": True, "id": None}, "id", "must be a string"),
        ({"action": "a", "approved": True, "id": 7}, "id", "must be a string"),
    ],
)
def test_shape_refusals_name_the_field(body: Any, path: str, words: str) -> None:
    """What only the model checks is refused as a RecordError naming the field path."""
    with pytest.raises(RecordError) as refused:
        DecisionRequest.read(body)
    assert refused.value.path == path and words in str(refused.value)


def test_values_are_the_library_s_to_check(log: DecisionLog) -> None:
    """The model keeps values as given; the library refuses them, naming the field."""
    odd = DecisionRequest.read({"action": 5, "approved": "yes", "votes": {"v": {"passed": 1}}})
    assert (odd.action, odd.approved, odd.subject, odd.reason, odd.id) == (5, "yes", {}, "", None)
    for fields, path in (
        ({"action": 5, "approved": True}, "action"),
        ({"action": "a", "approved": "yes"}, "approved"),
        ({"action": "a", "approved": True, "votes": {"v": {"passed": 1}}}, "votes.v.passed"),
        ({"action": "a", "approved": True, "id": "no spaces"}, "id"),
    ):
        d = DecisionRequest.read(fields)
        with pytest.raises(RecordError) as refused:
            log.record(d.action, d.approved, d.votes, d.subject, d.reason, id=d.id)
        assert refused.value.path == path
    assert len(log) == 0


def test_the_schema_says_what_the_library_checks(log: DecisionLog) -> None:
    """At each boundary the schema's patterns and lengths agree with what is recorded."""
    schema = DecisionRequest.model_json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == ["action", "approved"]
    assert tuple(schema["properties"]) == FIELDS
    action, id_ = schema["properties"]["action"], schema["properties"]["id"]

    def schema_allows_action(text: str) -> bool:
        size_ok = action["minLength"] <= len(text) <= action["maxLength"]
        return size_ok and re.search(action["pattern"], text) is not None

    for text in ("a", "x" * 128, "x" * 129, "", "tab\there", "del\x7f", "c1\x9f", "é ok"):
        try:
            log.record(text, True, {}, {})
            recorded = True
        except RecordError:
            recorded = False
        assert schema_allows_action(text) == recorded, repr(text)
    for caller_id in ("req-1", "a.b:c_d", "x" * 128, "x" * 129, "has space", "é", ""):
        try:
            log.record("a", True, {}, {}, id=caller_id)
            recorded = True
        except RecordError:
            recorded = False
        assert (re.search(id_["pattern"], caller_id) is not None) == recorded, repr(caller_id)


def test_importing_the_library_does_not_load_pydantic() -> None:
    """``import reasoning_trace`` and ``rtrace --help`` stay free of pydantic."""
    code = (
        "import sys, reasoning_trace, reasoning_trace.cli\n"
        "from click.testing import CliRunner\n"
        "assert CliRunner().invoke(reasoning_trace.cli.cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(reasoning_trace.cli.cli, ['record', '--help']).exit_code == 0\n"
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_record_json_reads_the_same_model(root: Path, tmp_path: Path) -> None:
    """``rtrace record --json`` refuses what the server refuses, with the same words."""
    for body, words in (
        ({"action": "a", "approved": True, "colour": "red"}, "unknown field"),
        ({"action": "a"}, "approved: required"),
        ({"action": "a", "approved": True, "id": None}, "id: must be a string"),
        ([1], "must be a JSON object"),
    ):
        path = tmp_path / "decision.json"
        path.write_text(json.dumps(body))
        done = rtrace(root, "record", "--json", str(path))
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    path.write_text(json.dumps({"action": "a", "approved": True, "id": "req-9"}))
    done = rtrace(root, "record", "--json", str(path))
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == "req-9"
