"""A request to record one decision: the JSON object ``POST /v1/decisions`` and
``rtrace record --json`` read, as a pydantic model.

``DecisionRequest`` says the shape: which fields there are, which are required, and what each
holds. Its JSON schema documents the body in the server's OpenAPI document. It checks only
what the library cannot, because the library never sees it: that the decision is an object,
that it has no unknown field, that ``action`` and ``approved`` are there, and that an ``id``,
when given, is a string (the library reads a missing id as "make one"). Every rule about a
field's value (types, lengths, control characters, votes, exact JSON, the id's characters)
is checked by the library when the decision is recorded (``record.prepare``), which names the
field path: so there is one answer to each question, and the fields are kept as given
(``SkipValidation``). The schema states the same rules for readers of the OpenAPI document.

Pydantic is imported here only: ``import reasoning_trace`` and ``rtrace --help`` do not load
this module.
Tests: ``tests/test_request.py``, ``tests/test_server.py``, ``tests/test_cli.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    WithJsonSchema,
    field_validator,
    with_config,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypeAliasType, TypedDict

from .errors import RecordError
from .ijson import MAX_EXACT_INT
from .record import CONTROL_CHARS, ID_CHARS, MAX_NAME

__all__ = ["FIELDS", "MAX_EXACT_INT", "DecisionRequest", "IJsonValue", "Vote"]


#: Any I-JSON value: numbers within +-(2**53-1), nested to any depth.
if TYPE_CHECKING:  # mypy reads a recursive TypeAliasType as a cycle; this is the same type
    IJsonValue: TypeAlias = bool | str | float | list["IJsonValue"] | dict[str, "IJsonValue"] | None
else:
    IJsonValue = TypeAliasType(
        "IJsonValue",
        Annotated[
            Union[  # noqa: UP007 -- the forward references of a recursive alias need Union
                bool,
                str,
                Annotated[float, Field(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT)],
                list["IJsonValue"],
                dict[str, "IJsonValue"],
                None,
            ],
            Field(description="Any JSON value; numbers within +-(2**53-1) (I-JSON, RFC 7493)"),
        ],
    )


@with_config(ConfigDict(extra="allow"))
class Vote(TypedDict, total=False, extra_items=IJsonValue):  # type: ignore[call-arg]
    """One voter's vote: ``passed`` (a bool) and ``reason`` where given, and anything else."""

    passed: bool
    reason: str


def _no_default(schema: dict[str, Any]) -> None:
    """Leave ``default: null`` out of the id's schema: an id, when given, is a string."""
    schema.pop("default", None)


class DecisionRequest(BaseModel):
    """One decision to record, as a client sends it (SPEC section 1 names the fields)."""

    model_config = ConfigDict(extra="forbid")

    action: SkipValidation[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_NAME,
                pattern=f"^[^{CONTROL_CHARS}]+$",
                description="What was decided, a short verb: 1-128 characters, no control "
                "characters",
            ),
        ]
    ]
    approved: SkipValidation[bool] = Field(description="The verdict")
    votes: SkipValidation[dict[str, Vote]] = Field(
        default_factory=dict, description="Voter name -> that voter's vote"
    )
    subject: SkipValidation[dict[str, IJsonValue]] = Field(
        default_factory=dict, description="What the decision was about"
    )
    reason: SkipValidation[str] = Field(default="", description="Free text for the dashboard")
    id: SkipValidation[
        Annotated[
            str | None,
            WithJsonSchema(
                {
                    "type": "string",
                    "pattern": f"^(?![0-9]+$)[{ID_CHARS}]{{1,{MAX_NAME}}}$",
                    "description": "A caller id, unique in the log: a retry with the same "
                    "content returns the stored record. Not digits only (that reads as a seq)",
                }
            ),
        ]
    ] = Field(default=None, json_schema_extra=_no_default)

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: Any) -> Any:
        """An id given as null or a number is refused here (the library reads None as none)."""
        if not isinstance(value, str):
            raise ValueError("must be a string when given")
        return value

    @classmethod
    def read(cls, obj: Any) -> DecisionRequest:
        """The request in a decoded JSON value; raises ``RecordError`` naming the field path."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise _first_refusal(exc.errors()) from None


#: The fields a decision request may have, in the order of the model.
FIELDS = tuple(DecisionRequest.model_fields)


def _first_refusal(errors: list[ErrorDetails]) -> RecordError:
    """One ``RecordError`` for what pydantic found: not an object, then unknown fields, then a
    missing field, then the id."""
    kinds = {error["type"] for error in errors}
    if "model_type" in kinds:
        return RecordError("", "a decision must be a JSON object")
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return RecordError(
            unknown[0],
            f"unknown field{'s' * (len(unknown) > 1)}: "
            f"{', '.join(unknown)} (a decision has {', '.join(FIELDS)})",
        )
    for name in FIELDS:
        for error in errors:
            if error["loc"][:1] == (name,):
                problem = "required" if error["type"] == "missing" else _message(error)
                return RecordError(name, problem)
    return RecordError("", _message(errors[0]))


def _message(error: ErrorDetails) -> str:
    """A pydantic message without its "Value error, " prefix."""
    return str(error["msg"]).removeprefix("Value error, ")
