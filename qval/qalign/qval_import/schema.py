"""What a bethgelab/qval evaluation summary (``summary_*.json``) must hold, as pydantic models.

Strict on every value the import computes with: ``"50"`` is not 50, ``true`` is not 1, a count is a non-negative
whole number, NaN is null (QVal writes NaN as null) and an infinity is an error. Lenient where a field is only
informational (``signal_type``, ``timestamp``, ``eval_methods``, ``dataset_metadata.seed``): a value of the wrong
kind is ignored, as it always was, so a summary that imported before still imports. Unknown keys are ignored: QVal
writes many keys the import does not read (``dataset_config``, ``comparisons``, ...).

A failure is a ``SummaryError`` naming the file and the key path (``estimations.qv_mc_max.ground_truth_values[3]``)
in the words the importer has always used ("missing key", "expected a list, got dict").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from qval.errors import UsageError

MIN_USABLE_POINTS = 50  # QVal's default ``min_usable_correlation_points``


class SummaryError(UsageError, ValueError):
    """A malformed summary. The message names the file and the key path."""

    def __init__(self, source: str, key_path: str, reason: str):
        self.source, self.key_path, self.reason = source, key_path, reason
        super().__init__(f"{source}: {key_path or '<root>'}: {reason}")


# --------------------------------------------------------------------------------------------------------------
# Value types


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    # A hostile value can be megabytes long; the message only needs to identify it.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _invalid(kind: str, message: str) -> PydanticCustomError:
    # No context: pydantic then leaves the message as it is (braces in a shown value stay literal).
    return PydanticCustomError(kind, message)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid("number", f"expected a number or null, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer literal with hundreds of digits
        raise _invalid("number", "infinite value (too large for a float)") from None
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise _invalid("number", "infinite value")
    return number


def _count(value: Any) -> int:
    # QVal writes counts as integers; a whole float (50.0) is accepted, NaN and infinities are not whole.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
        or value < 0
    ):
        raise _invalid("count", f"expected a non-negative integer, got {_show(value)}")
    return int(value)


def _rho(value: Any) -> float | None:
    rho = _number(value)
    if rho is not None and not -1 - 1e-12 <= rho <= 1 + 1e-12:  # float noise at ±1 is QVal's, not an error
        raise _invalid("rho", f"a Spearman rho must lie in [-1, 1], got {rho}")
    return rho


def _not_empty(value: Any) -> Any:
    if not value:
        raise _invalid("empty", f"empty {'string' if isinstance(value, str) else 'list'}")
    return value


def _granularity(value: str) -> str:
    if value == "trajectory":
        raise _invalid("granularity", "'trajectory' (shaped-reward, per-trajectory sums) is not supported by import")
    if value not in ("point", "ranking"):
        raise _invalid("granularity", f"expected 'point' or 'ranking', got {_show(value)}")
    return value


def _or_none(kind: type) -> BeforeValidator:
    """An informational field: a value of another kind reads as absent."""
    return BeforeValidator(lambda v: v if isinstance(v, kind) and not isinstance(v, bool) else None)


Number = Annotated[float | None, PlainValidator(_number)]  # a number, or None for null/NaN
Count = Annotated[int, PlainValidator(_count)]
Rho = Annotated[float | None, PlainValidator(_rho)]
NonEmptyStr = Annotated[str, AfterValidator(_not_empty)]
Granularity = Annotated[str, AfterValidator(_granularity)]


def _error_at(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A failure below the validator's own position (pydantic prefixes the validator's path)."""
    return ValidationError.from_exception_data(
        "summary", [InitErrorDetails(type=_invalid("summary", message), loc=loc, input=value)]
    )


def _one_of(pick: Callable[[Any], type[BaseModel]]) -> WrapValidator:
    """Validate with the model ``pick`` chooses for the input. Pydantic's tagged unions would put the tag into every
    error path (``estimations.qv_mc_max.point.methods``); this keeps the path the file's own."""
    return WrapValidator(lambda value, _handler: pick(value).model_validate(value))


# --------------------------------------------------------------------------------------------------------------
# The summary


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Correlation(_Model):
    """One stored pointwise statistic (``pearson``, ``spearman``, ``kendall_tau``, ``sign_agreement``)."""

    correlation: Number  # the key is required, its value may be null
    p_value: Number = None
    num_points: Count


class PointwiseMethod(_Model):
    """A method's predictions at every point, with the statistics QVal stored for them."""

    predicted_values: list[Number]
    correlations: dict[str, Correlation]
    num_dropped_zero: Count | None = None


class AggregateStats(_Model):
    """Statistics over the non-null per-program values of one metric (QVal's ``_aggregate_sample_correlations``)."""

    mean: Number
    std: Number
    min: Number
    max: Number
    median: Number
    num_samples: Count
    num_nan: Count


class SampleGroupMethod(_Model):
    """The multi-sample code entry: one pointwise entry per generated program."""

    per_sample: Annotated[list[PointwiseMethod], AfterValidator(_not_empty)]
    num_samples: Count
    aggregate_correlations: dict[str, AggregateStats]


def _point_method(value: Any) -> type[BaseModel]:
    if not isinstance(value, dict) or "predicted_values" in value:
        return PointwiseMethod  # a non-object fails there as "expected an object"
    if "per_sample" in value:
        return SampleGroupMethod
    raise _invalid("method", "expected 'predicted_values' (pointwise entry) or 'per_sample' (multi-sample entry)")


class PointEstimation(_Model):
    """Ground truth at every evaluation point and the methods compared with it."""

    granularity: Granularity
    assumption: Annotated[str | None, _or_none(str)] = None  # the signal type QVal transformed predictions to
    ground_truth_values: list[Number]
    methods: dict[str, Annotated[PointwiseMethod | SampleGroupMethod, _one_of(_point_method)]]


class RankingStats(_Model):
    mean: Number
    std: Number
    num_valid: Count
    num_skipped: Count
    num_points: Count


class RankingCorrelations(_Model):
    ranking_spearman: RankingStats


class RankingMethod(_Model):
    correlations: RankingCorrelations
    per_point_correlations: list[Rho]  # one rho per state, null where QVal skipped the state


class RankingEstimation(_Model):
    """Per-state Spearman rho of each method's candidate ranking: no per-candidate scores survive in a summary."""

    granularity: Granularity
    candidate_counts: list[Count]
    methods: dict[str, RankingMethod]

    @model_validator(mode="after")
    def _every_state_has_a_count(self) -> RankingEstimation:
        for name, method in self.methods.items():
            n, m = len(method.per_point_correlations), len(self.candidate_counts)
            if n > m:
                raise _error_at(
                    ("methods", name, "per_point_correlations"),
                    f"{n} states but candidate_counts has only {m}",
                    method.per_point_correlations,
                )
        return self


def _estimation(value: Any) -> type[BaseModel]:
    ranking = isinstance(value, dict) and value.get("granularity") == "ranking"
    return RankingEstimation if ranking else PointEstimation  # PointEstimation reports a bad granularity


class ExperimentInfo(_Model):
    env_name: NonEmptyStr
    min_usable_correlation_points: Annotated[int, BeforeValidator(lambda v: MIN_USABLE_POINTS if v is None else v)] = (
        MIN_USABLE_POINTS
    )
    num_evaluation_points: int | None = None
    exclude_zero_points: bool = False
    signal_type: Annotated[str | None, _or_none(str)] = None
    timestamp: Annotated[str | None, _or_none(str)] = None
    eval_methods: Annotated[list[Any], BeforeValidator(lambda v: v if isinstance(v, list) else [])] = []


class DatasetMetadata(_Model):
    seed: Annotated[int | None, _or_none(int)] = None


class QvalSummary(_Model):
    """The parts of a summary the import reads."""

    experiment_info: ExperimentInfo
    estimations: dict[str, Annotated[PointEstimation | RankingEstimation, _one_of(_estimation)]]
    # Not imported (only noted); null or any other empty value reads as none, as QVal writes ``{}``.
    gt_vs_gt_estimations: Annotated[dict[str, Any], BeforeValidator(lambda v: v or {})] = {}
    dataset_metadata: Annotated[DatasetMetadata, BeforeValidator(lambda v: v if isinstance(v, dict) else {})] = (
        DatasetMetadata()
    )

    @field_validator("estimations")
    @classmethod
    def _some_estimation(cls, value: dict) -> dict:
        if not value:
            raise _invalid("empty", "no ground-truth estimations")
        return value


# --------------------------------------------------------------------------------------------------------------
# Errors in the importer's words

_REASONS = {
    "missing": "missing key",
    "model_type": "expected an object, got {kind}",
    "dict_type": "expected an object, got {kind}",
    "list_type": "expected a list, got {kind}",
    "string_type": "expected a string, got {kind}",
    "int_type": "expected an integer, got {kind}",
    "bool_type": "expected true/false, got {kind}",
}


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def summary_error(source: str, exc: ValidationError) -> SummaryError:
    """The first problem pydantic found, with its key path, and how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    reason = _REASONS.get(first["type"], "{msg}").format(kind=_kind(first.get("input")), msg=first["msg"])
    if len(errors) > 1:
        reason += f" ({len(errors) - 1} more problem(s))"
    return SummaryError(source, _path(first["loc"]), reason)


def validate_summary(data: Any, source: str) -> QvalSummary:
    """The summary as models, or a ``SummaryError`` naming ``source`` and the key path."""
    try:
        return QvalSummary.model_validate(data)
    except ValidationError as exc:
        raise summary_error(source, exc) from None
