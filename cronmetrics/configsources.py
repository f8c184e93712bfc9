"""Where a :class:`~cronmetrics.config.Config` reads its settings from, besides flags.

The config file is strict and the environment lenient, on purpose: a file says what type
it means, an environment variable is always a string (:func:`_coerce_env`). A value that
does not convert is handed on unchanged, so pydantic's own validation reports it and
:func:`~cronmetrics.config.load_config` can name the variable. The file itself is parsed
by ``load_config`` (YAML 1.2 through :mod:`cronmetrics.jobs.yamlio`, ``file:line`` errors);
:func:`file_settings` hands its mapping to the validation inside it through a context
variable, not a global, so two loads in two threads never see each other's file.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource

__all__ = ["EnvSource", "FileSource", "file_settings"]

_file_data: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_file_data")


@contextlib.contextmanager
def file_settings(data: dict[str, Any]) -> Iterator[None]:
    """Make ``data`` the config file's mapping for the :class:`FileSource` read inside.

    ``Config(**flags)`` takes no file argument (pydantic-settings builds its sources
    itself), so the parsed file reaches :class:`FileSource` this way.
    """
    token = _file_data.set(data)
    try:
        yield
    finally:
        _file_data.reset(token)


class FileSource(PydanticBaseSettingsSource):
    """The config file's mapping, already parsed by :func:`~cronmetrics.config.load_config`
    and handed over by :func:`file_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _file_data.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get({}))


def _scalar_type(annotation: Any) -> Any:
    """``StrictInt`` -> ``int``, ``SomeModel | None`` -> ``SomeModel``; else unchanged."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _coerce_env(annotation: Any, value: Any) -> Any:
    """Environment values are strings; give strict number/boolean fields what they need.

    The file keeps its strict typing (``days: "30"`` is an error there), but
    ``CRONMETRICS_RETENTION__DAYS=30`` and ``CRONMETRICS_NO_AUTH=true`` must work.
    """
    target = _scalar_type(annotation)
    if isinstance(value, dict) and isinstance(target, type) and issubclass(target, BaseModel):
        fields = target.model_fields
        return {
            k: _coerce_env(fields[k].annotation, v) if k in fields else v for k, v in value.items()
        }
    if isinstance(value, str) and target in (int, float, bool):
        try:
            return pydantic.TypeAdapter(target).validate_python(value.strip())
        except pydantic.ValidationError:
            return value  # reported by the real validation, naming the variable
    return value


class EnvSource(EnvSettingsSource):
    """``CRONMETRICS_*`` variables, read by pydantic-settings, with strings converted
    where a strict number or boolean field needs it (:func:`_coerce_env`)."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        prepared = super().prepare_field_value(field_name, field, value, value_is_complex)
        return _coerce_env(field.annotation, prepared)
