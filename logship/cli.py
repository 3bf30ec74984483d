"""The command line both programs share: `--help` with readable metavars and real defaults, and
errors that name the flag and the variable the user typed, in one line."""

from __future__ import annotations

import difflib
import errno
import os
import re
import types
from argparse import ArgumentParser
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, CliSettingsSource

ENV_PREFIX = "LOGSHIP_"
ENV_RULE = f"""\
Every flag is also an environment variable: {ENV_PREFIX} and the flag's name in capitals, with
'-' written '_' and '.' written '__' (--amqp.url is {ENV_PREFIX}AMQP__URL, --batch-max-bytes is
{ENV_PREFIX}BATCH_MAX_BYTES). A flag wins over its variable. On/off flags take no value
(--once, --no-once); as variables they take true or false."""


class SettingProblem(ValueError):
    """Raised by a validator about one field (dotted, relative to the model validated), so the
    error can name its flag and variable even when the check spans the whole model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def flag(dest: str) -> str:
    """`amqp.connect_timeout` → `--amqp.connect-timeout`."""
    return "--" + dest.replace("_", "-")


def env_var(dest: str) -> str:
    """`amqp.connect_timeout` → `LOGSHIP_AMQP__CONNECT_TIMEOUT`."""
    return ENV_PREFIX + dest.upper().replace(".", "__")


def named(dest: str) -> str:
    """How an error names a setting: both ways the user may have given it."""
    return f"{flag(dest)} / {env_var(dest)}"


# --- what help shows --------------------------------------------------------------------------


def _plain_type(annotation: Any) -> Any:
    """`Annotated[float, ...] | None` → float."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Every leaf setting of a model as (dest, field), nested models flattened to `a.b`."""
    found: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        kind = _plain_type(info.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += fields(kind, f"{prefix}{name}.")
        else:
            found.append((f"{prefix}{name}", info))
    return found


def field_at(model: type[BaseModel], dest: str) -> FieldInfo | None:
    info: FieldInfo | None = None
    for part in dest.split("."):
        info = model.model_fields.get(part)
        if info is None:
            return None
        kind = _plain_type(info.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            model = kind
    return info


def real_default(model: type[BaseModel], dest: str) -> Any:
    """The value a setting has when nobody sets it, also where a nested model's default comes
    from a factory (the producer's and the consumer's own metrics port)."""
    first, *rest = dest.split(".")
    value = model.model_fields[first].get_default(call_default_factory=True, validated_data={})
    for part in rest:
        value = getattr(value, part)
    return value


def metavar(dest: str, info: FieldInfo) -> str | None:
    """A word for what the flag takes (PATH, SECONDS, BYTES, {a,b}), never a Python type."""
    if "metavar" in _extra(info):
        return str(_extra(info)["metavar"])
    kind = _plain_type(info.annotation)
    name = dest.rsplit(".", 1)[-1]
    if kind is bool:
        return None
    if get_origin(kind) is Literal:
        return "{" + ",".join(str(a) for a in get_args(kind)) + "}"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "{" + ",".join(str(m.value) for m in kind) + "}"
    if kind is float:
        return "SECONDS"
    if kind is int:
        if name.endswith("bytes"):
            return "BYTES"
        return "PORT" if name.endswith("port") else "N"
    if kind is Path:
        return "PATH"
    return "TEXT"


def _bytes_text(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value} = {value // size} {unit}"
    return str(value)


def default_text(model: type[BaseModel], dest: str) -> str:
    """The default as help and the README show it."""
    info = field_at(model, dest)
    assert info is not None, dest
    value = real_default(model, dest)
    if value is None:
        return str(_extra(info).get("unset", "none"))
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and metavar(dest, info) == "BYTES":
        return _bytes_text(value)
    return str(value) if str(value) else '""'


def polish_help(
    parser: ArgumentParser, model: type[BaseModel], epilog: str, usage: str | None = None
) -> None:
    """Give every flag of a parser pydantic-settings built a readable metavar, its description
    and its real default, and end the help with the environment rule and the caller's text."""
    parser.usage = usage or "%(prog)s [options]"  # the options are listed right below
    for action in parser._actions:
        info = field_at(model, action.dest) if action.option_strings else None
        if info is None or action.help == "==SUPPRESS==":
            continue
        if action.metavar is not None:
            action.metavar = metavar(action.dest, info)
        text = (info.description or "").replace("%", "%%")
        action.help = f"{text} (default: {default_text(model, action.dest)})".strip()
    parser.epilog = "\n\n".join(part for part in (ENV_RULE, epilog.strip("\n")) if part)


def cli_source(
    model: type[BaseSettings], epilog: str, usage: str | None = None
) -> CliSettingsSource[Any]:
    source: CliSettingsSource[Any] = CliSettingsSource(model)
    polish_help(source.root_parser, model, epilog, usage)
    return source


# --- what errors say --------------------------------------------------------------------------


def _dest(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The setting an error's location points at; union members and list indexes dropped."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            break
        parts.append(part)
        kind = _plain_type(current.model_fields[part].annotation)
        current = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return ".".join(parts)


_SAYS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
}


def _what_is_wrong(error: ErrorDetails) -> tuple[str, str | None]:
    """(what is wrong, the field a SettingProblem names)."""
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, SettingProblem):
        return str(cause), cause.field
    if isinstance(cause, Exception):
        return str(cause), None
    template = _SAYS.get(error["type"])
    if template is None:
        text = str(error["msg"])
        return text[:1].lower() + text[1:], None
    values = {
        key: f"{value:g}" if isinstance(value, float) else str(value).replace("'", "")
        for key, value in ctx.items()
    }
    return template.format(**values), None


def describe_validation_error(model: type[BaseModel], error: ValidationError) -> str:
    first = error.errors()[0]
    message, field = _what_is_wrong(first)
    dest = _dest(model, first["loc"])
    if field:
        dest = f"{dest}.{field}" if dest else field
    info = field_at(model, dest) if dest else None
    typed = first.get("input")
    secret = info is not None and _plain_type(info.annotation) is SecretStr
    if field is None and not secret and isinstance(typed, str | int | float) and str(typed):
        message += f" (got {typed})"
    more = error.error_count() - 1
    if more:
        message += f" (and {more} more)"
    return f"{named(dest)}: {message}" if dest else message


def describe_cli_error(parser: ArgumentParser, text: str) -> str:
    """argparse's complaints, said the same way as a wrong value."""
    text = text.splitlines()[0].removeprefix("error parsing CLI: ")
    unknown = re.fullmatch(r"unrecognized arguments: (.*)", text)
    if unknown:
        word = unknown.group(1).split()[0]
        known = [s for a in parser._actions for s in a.option_strings]
        close = difflib.get_close_matches(word.split("=")[0], known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see --help"
        what = "unknown flag" if word.startswith("-") else "unexpected argument"
        return f"{what} {word}: {hint}"
    group = re.fullmatch(
        r'error parsing value for field "(\w+)" from source "EnvSettingsSource"', text
    )
    if group:
        return (
            f"{env_var(group.group(1))}: is not JSON; set the group's settings one by one instead "
            f"({env_var(group.group(1))}__<SETTING>, see --help)"
        )
    about = re.fullmatch(r"argument (--[\w.-]+)(?:/--[\w.-]+)?: (.*)", text)
    if about:
        dest = about.group(1).removeprefix("--").removeprefix("no-").replace("-", "_")
        problem = about.group(2)
        if problem.startswith("ignored explicit argument"):
            problem = f"takes no value: say {flag(dest)} or --no-{flag(dest)[2:]}"
        elif problem == "expected one argument":
            problem = "needs a value (see --help)"
        return f"{named(dest)}: {problem}"
    return text


_OS_HINTS = {
    errno.EACCES: "give the program's user access, or choose another path",
    errno.EPERM: "give the program's user access, or choose another path",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.ENOSPC: "the disk is full: free space, or choose another path",
    errno.EDQUOT: "the disk quota is used up: free space, or choose another path",
    errno.EISDIR: "give the path of a file",
}


def describe_os_error(error: OSError, paths: Mapping[str, Sequence[object]]) -> str:
    """An OSError at start said like a wrong setting: the flag and variable of the setting whose
    file it is about (its own path, or one made from it such as OUTPUT.state or CHECKPOINT.tmp),
    what the system said, and what would help."""
    filename = os.fsdecode(error.filename) if isinstance(error.filename, str | bytes) else ""
    dest = next(
        (
            dest
            for dest, given in paths.items()
            for path in given
            if filename and str(path) and filename.startswith(str(path))
        ),
        None,
    )
    reason = error.strerror or str(error) or type(error).__name__
    text = f"cannot use {filename} ({reason})" if filename else reason
    hint = _OS_HINTS.get(error.errno or 0, "check the path, or choose another" if dest else "")
    text = f"{text}; {hint}" if hint else text
    return f"{named(dest)}: {text}" if dest else text


def describe_unknown_command(word: str, commands: Sequence[str], program: str) -> str:
    """A first word that is no command: the closest one if it looks like a typo of it."""
    close = difflib.get_close_matches(word, commands, n=1)
    if close:
        return f"unknown command {word!r}: did you mean {close[0]}?"
    return f"unknown command {word!r} (commands: {', '.join(commands)}; see {program} --help)"
