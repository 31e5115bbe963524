"""The configuration reference (docs/configuration.md), generated from the pydantic models.

Every key of gateway.toml (with each built-in driver's ``[[sensors]]`` keys) and of
ingest.toml, with its type, default and the docstring written under the field. A test
regenerates it and compares, so the document cannot drift from the code::

    python -m contract.reference            # rewrite docs/configuration.md
    python -m contract.reference --check    # exit 1 if it is out of date

Docstrings come from pydantic's ``description`` when a model sets
``use_attribute_docstrings``, else from the class source (the string right under the
field), searched along the class's bases.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import itertools
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _source_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings (``x: int = 1`` then ``\"\"\"...\"\"\"``) of one class body."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def field_doc(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.description:
        return inspect.cleandoc(info.description)
    for cls in model.__mro__:
        doc = _source_docstrings(cls).get(name) if "__module__" in vars(cls) else None
        if doc:
            return doc
    return ""


def _constraints(metadata: list[Any]) -> list[str]:
    out = []
    for m in metadata:
        if isinstance(m, Ge):
            out.append(f">= {m.ge:,}")
        elif isinstance(m, Gt):
            out.append(f"> {m.gt:,}")
        elif isinstance(m, Le):
            out.append(f"<= {m.le:,}")
        elif isinstance(m, Lt):
            out.append(f"< {m.lt:,}")
        elif isinstance(m, MinLen):
            out.append(f"length >= {m.min_length}")
        elif isinstance(m, MaxLen):
            out.append(f"length <= {m.max_length}")
        else:
            pattern = getattr(m, "pattern", None)
            if isinstance(pattern, str):
                out.append(f"matches `{pattern}`")
    return out


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int (>= 1)``, ``"v1" | "v2"``, ``list of str``."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = get_args(annotation)
        extra = _constraints(meta)
        return type_name(base) + (f" ({', '.join(extra)})" if extra else "")
    if origin in (typing.Union, types.UnionType):
        args = get_args(annotation)
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | unset" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in get_args(annotation))
    if origin in (list, tuple, set):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        inner = ", ".join(type_name(a) for a in items)
        return f"{'list' if origin is list else 'array'} of {inner}" if inner else "list"
    if origin is dict:
        key, value = get_args(annotation)
        return f"table of {type_name(key)} -> {type_name(value)}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "table"
        if issubclass(annotation, enum.Enum):
            return " | ".join(f'"{m.value}"' for m in annotation)
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "Path": "path",
            "PosixPath": "path",
            "SecretStr": "string (secret)",
            "date": "date",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "**required**"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path | enum.Enum):
        return f'`"{value.value if isinstance(value, enum.Enum) else value}"`'
    if isinstance(value, int | float):
        return f"`{value!r}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        # pydantic moves a field's own Annotated constraints into ``metadata``.
        extra = _constraints(info.metadata)
        kind = type_name(info.annotation) + (f" ({', '.join(extra)})" if extra else "")
        lines.append(
            f"| `{name}` | {_cell(kind)} | {default_text(info)} | {_cell(field_doc(model, name))} |"
        )
    return lines


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_of_model(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is list:
        (inner,) = get_args(annotation)
        if _is_model(inner):
            return typing.cast(type[BaseModel], inner)
    return None


def config_section(title: str, root: type[BaseModel], file: str) -> list[str]:
    """One config file: a table per ``[section]`` and per ``[[array]]`` of its root model."""
    out = [f"## {file}", "", inspect.cleandoc(root.__doc__ or ""), ""]
    for name, info in root.model_fields.items():
        annotation = info.annotation
        if _is_model(annotation):
            sub = typing.cast(type[BaseModel], annotation)
            out += [f"### [{name}]", ""]
            doc = inspect.cleandoc(sub.__doc__ or "")
            out += [doc, ""] if doc else []
            out += [*model_table(sub), ""]
        elif (item := _list_of_model(annotation)) is not None:
            out += [f"### [[{name}]]", "", field_doc(root, name), ""]
            if name == "sensors":
                out += _sensor_sections()
            else:
                out += [*model_table(item), ""]
    return out


def _sensor_sections() -> list[str]:
    from sensors import registry
    from sensors.base import SensorConfig

    out = ["Keys every sensor has, whatever its driver:", ""]
    out += [*model_table(SensorConfig), ""]
    base = set(SensorConfig.model_fields)
    for name in sorted(registry.BUILTIN_DRIVERS):
        cls = registry.config_class(name)
        own = tuple(k for k in cls.model_fields if k in base and k != "driver")
        out += [f'#### driver = "{name}"', "", registry.summary(name), ""]
        out += ["Its own keys (besides the common ones above):", ""]
        out += [*model_table(cls, skip=own), ""]
    return out


def render() -> str:
    from agent.config import GatewayConfig
    from ingest.config import IngestConfig

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m contract.reference` from the pydantic models; do not",
        "     edit by hand. tests/test_config_reference.py fails when this file is stale. -->",
        "",
        "Both files are TOML. Unknown keys are errors. Every key can be overridden by an",
        "environment variable: `FARMTEL_<SECTION>__<KEY>` (e.g. `FARMTEL_MQTT__PORT=1884`,",
        "`FARMTEL_SENSORS__0__PORT=/dev/ttyUSB1`). Examples with every default:",
        "`examples/gateway.toml` and `examples/ingest.toml`.",
        "",
    ]
    out += config_section("gateway", GatewayConfig, "gateway.toml (farmtel agent run)")
    out += config_section("ingest", IngestConfig, "ingest.toml (farmtel ingest run)")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date; regenerate it: python -m contract.reference",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
