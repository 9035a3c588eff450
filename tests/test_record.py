"""The record format of SPEC 1: round-trips, refusals that name the field, redaction."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_trace import DecisionLog, RecordError, RecordTooLarge, RedactionError
from reasoning_trace.record import format_record, format_utc, parse_record, prepare, uuid7

from .conftest import SUBJECT, VOTES, snapshot

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def test_uuid7_shape_and_time() -> None:
    """Ids are lowercase UUIDv7 whose first 48 bits are the Unix milliseconds."""
    value = uuid7(1_700_000_000_123)
    assert UUID7.match(value)
    assert int(value.replace("-", "")[:12], 16) == 1_700_000_000_123
    assert len({uuid7() for _ in range(1000)}) == 1000


def test_format_utc_matches_spec_example() -> None:
    """The datetime text has microseconds and a Z, as in SPEC 1."""
    assert format_utc(1795646503123456) == "2026-11-25T22:41:43.123456Z"


def test_line_is_sorted_compact_utf8(log: DecisionLog) -> None:
    """The stored line has sorted keys, no spaces, raw UTF-8 and the seven seed fields."""
    d = log.record("upgrade_proposal", True, VOTES, {"name": "café ✓"}, "weil")
    obj = orjson.loads(d.line)
    assert list(obj) == sorted(obj)
    assert b", " not in d.line and b'": ' not in d.line
    assert "café ✓".encode() in d.line
    for key in ("timestamp", "datetime_utc", "action", "approved", "votes", "subject", "reason"):
        assert key in obj
    assert obj["v"] == 1 and obj["seq"] == 0 and UUID7.match(obj["id"])
    assert format_utc(round(obj["timestamp"] * 1e6)) == obj["datetime_utc"]


def test_parse_format_round_trip(log: DecisionLog) -> None:
    """parse_record(format_record(d)) gives back d, and the stored line is canonical."""
    d = log.record("halt", False, VOTES, SUBJECT, "stop", id="gate:42")
    assert format_record(d) == d.line
    assert parse_record(d.line) == d


def test_unknown_fields_are_kept() -> None:
    """Readers keep fields they do not know."""
    line = (
        b'{"action":"a","approved":true,"datetime_utc":"2026-01-01T00:00:00.000000Z",'
        b'"future":{"x":1},"id":"i","reason":"","seq":0,"subject":{},"timestamp":1767225600.0,'
        b'"v":1,"votes":{}}'
    )
    d = parse_record(line)
    assert d.extra == {"future": {"x": 1}}
    assert format_record(d) == line


@pytest.mark.parametrize(
    ("kwargs", "path", "words"),
    [
        ({"subject": {"new_content": b"x"}}, "subject.new_content", "bytes is not JSON"),
        ({"subject": {"score": math.nan}}, "subject.score", "NaN"),
        ({"subject": {"score": math.inf}}, "subject.score", "Infinity"),
        ({"subject": {"t": (1, 2)}}, "subject.t", "tuple is not JSON"),
        ({"subject": {"k": {1: "a"}}}, "subject.k[1]", "int key"),
        ({"subject": {"s": "bad \ud800"}}, "subject.s", "lone surrogate"),
        ({"subject": {"big": 2**70}}, "subject.big", "64-bit"),
        ({"votes": {"v": {"passed": "yes"}}}, "votes.v.passed", "bool"),
        ({"votes": {"v": "yes"}}, "votes.v", "object"),
        ({"votes": {"v": {"nested": [1, object()]}}}, "votes.v.nested[1]", "object is not JSON"),
        ({"action": ""}, "action", "1 to 128"),
        ({"action": "a\nb"}, "action", "control"),
        ({"approved": 1}, "approved", "bool"),
        ({"reason": None}, "reason", "str"),
        ({"subject": []}, "subject", "dict"),
    ],
)
def test_refusals_name_the_field(
    log: DecisionLog, root: Path, kwargs: dict[str, object], path: str, words: str
) -> None:
    """Each unrepresentable value is refused naming its field path; nothing is written."""
    log.record("before", True, {}, {})
    before = snapshot(root)
    args: dict[str, object] = {
        "action": "upgrade",
        "approved": True,
        "votes": {},
        "subject": {},
        "reason": "",
    }
    args.update(kwargs)
    with pytest.raises(RecordError) as info:
        log.record(**args)  # type: ignore[arg-type]
    assert info.value.path == path
    assert words in str(info.value)
    assert str(info.value).startswith(path)
    assert snapshot(root) == before
    assert log.record("after", True, {}, {}).seq == 1  # no seq was consumed


def test_bad_ids_are_refused(log: DecisionLog) -> None:
    """A caller id must be 1-128 characters of the allowed alphabet."""
    for bad in ("", "a b", "x" * 129, "é"):
        with pytest.raises(RecordError, match=r"^id: "):
            log.record("a", True, {}, {}, id=bad)
    assert len(log) == 0


def test_size_limit(root: Path) -> None:
    """A record over the line limit is refused with RecordTooLarge before anything is written."""
    with DecisionLog(str(root), sync="never", max_line_bytes=2000) as log:
        log.record("ok", True, {}, {"x": "y" * 1000})
        before = snapshot(root)
        with pytest.raises(RecordTooLarge, match="over the limit of 2000"):
            log.record("big", True, {}, {"x": "y" * 3000})
        assert snapshot(root) == before


@pytest.mark.parametrize(
    ("votes", "subject", "reason", "path"),
    [
        ({}, {"small": 1, "blob": "y" * 3000}, "", "subject.blob"),
        ({}, {"deep": {"er": [0, {"blob": "y" * 3000}]}}, "", "subject.deep.er[1].blob"),
        ({"v": {"passed": True, "reason": "r" * 3000}}, {}, "", "votes.v.reason"),
        ({}, {}, "x" * 3000, "reason"),
        ({}, {f"k{i}": "y" * 20 for i in range(200)}, "", "subject"),  # many small values
    ],
)
def test_size_limit_names_the_largest_field(
    root: Path, votes: dict[str, object], subject: dict[str, object], reason: str, path: str
) -> None:
    """A record over the limit names the field that makes it so, in the message and ``path``."""
    with DecisionLog(str(root), sync="never", max_line_bytes=2000) as log:
        with pytest.raises(RecordTooLarge) as caught:
            log.record("big", True, votes, subject, reason)
        assert caught.value.path == path
        assert f"the largest field is {path} (" in str(caught.value)
        assert len(log) == 0


def test_redaction_by_path_and_callable(root: Path) -> None:
    """Path and callable rules replace values before writing and list the paths."""

    def secrets(fields: dict[str, object]) -> list[str]:
        subject = fields["subject"]
        assert isinstance(subject, dict)
        return [f"subject.{k}" for k, v in subject.items() if str(v).startswith("sk-")]

    votes = {"a": {"passed": True, "reason": "private"}, "b": {"passed": False, "reason": "no"}}
    subject = {"agent_id": "x", "api": "sk-123", "prompt": "the prompt"}
    with DecisionLog(
        str(root), sync="never", redact=["votes.*.reason", "subject.prompt", secrets]
    ) as log:
        d = log.record("a", True, votes, subject)
    assert d.redacted == ("votes.a.reason", "votes.b.reason", "subject.prompt", "subject.api")
    raw = d.line.decode()
    assert "private" not in raw and "sk-123" not in raw and "the prompt" not in raw
    assert d.subject["agent_id"] == "x" and d.votes["a"]["passed"] is True
    assert votes["a"]["reason"] == "private" and subject["api"] == "sk-123"  # caller untouched


def test_failing_redaction_refuses_record(root: Path) -> None:
    """A redaction rule that raises refuses the record; nothing unredacted is written."""

    def broken(fields: object) -> list[str]:
        raise RuntimeError("rule bug")

    with DecisionLog(str(root), sync="never", redact=[broken]) as log:
        with pytest.raises(RedactionError, match="rule bug"):
            log.record("a", True, {}, {"secret": "s3cret"})
        assert len(log) == 0
    assert not list(root.glob("*.jsonl"))


def test_bad_redaction_path_is_refused_at_open(root: Path) -> None:
    """Redaction paths outside votes/subject/reason are refused when the log is opened."""
    with pytest.raises(RedactionError, match="must start with"):
        DecisionLog(str(root), redact=["seq"])


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
any_value = st.recursive(
    json_leaf | st.binary(max_size=4) | st.just(math.nan) | st.tuples(st.integers()),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=10,
)
votes_st = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.fixed_dictionaries({"passed": st.booleans(), "reason": st.text(max_size=20)}),
    max_size=5,
)
actions = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=actions,
    approved=st.booleans(),
    votes=votes_st,
    subject=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    reason=st.text(max_size=50),
)
def test_accepted_decisions_read_back_equal(
    tmp_path: Path, action: str, approved: bool, votes: dict, subject: dict, reason: str
) -> None:
    """Any accepted decision reads back equal, by get, recent and a fresh open."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "prop"
    with DecisionLog(str(root), sync="never") as log:
        seq_before = len(log)
        d = log.record(action, approved, votes, subject, reason)
        assert d.seq == seq_before
        assert (d.action, d.approved, d.votes, d.subject, d.reason) == (
            action,
            approved,
            votes,
            subject,
            reason,
        )
        assert log.get(d.seq) == d
    with DecisionLog(str(root), sync="never") as log:
        assert log.recent(1) == [d]
        assert [x.seq for x in log.read()] == list(range(len(log)))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subject=st.dictionaries(st.text(max_size=4), any_value, max_size=3))
def test_refused_decisions_change_nothing(tmp_path: Path, subject: dict) -> None:
    """Any refused decision leaves every byte on disk as it was and consumes no seq."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "refuse"
    with DecisionLog(str(root), sync="never") as log:
        log.record("seed", True, {}, {})
        before = snapshot(root)
        try:
            d = log.record("x", True, {}, subject)
        except RecordError:
            assert snapshot(root) == before
            assert log.record("next", True, {}, {}).seq == 1
        else:
            assert d.subject == subject and d.seq == 1


def test_prepare_runs_before_any_lock() -> None:
    """prepare() validates without a log at all: refusals never reach storage."""
    with pytest.raises(RecordError):
        prepare("a", True, {}, {"x": {1, 2}})
