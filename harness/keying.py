"""Keys that survive added options: run ids and cache keys leave out a field added later while it holds the
value that behaves as before it existed.

A field says so where it is declared, with the `KEY_OMIT_DEFAULT` marker; its declared default is that "as
before" value:

    attack_seed: Annotated[int | None, KEY_OMIT_DEFAULT] = Field(None, description=...)

`trim` walks a model's JSON (a plain dict, e.g. a stored record's `spec`) against the model class and its
nested models and drops every marked field at its default, so a spec written before the field existed and
one written after, at the default, hash alike. A field without the marker enters every key. Which fields
entered the committed keys is recorded in `schemas/run-id-fields.json`; `snapshot_problems` names every
field that is neither there nor marked, so forgetting the marker fails a test instead of re-keying every run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

SNAPSHOT_FILE = Path(__file__).resolve().parent.parent / "schemas" / "run-id-fields.json"


@dataclass(frozen=True)
class KeyOmitDefault:
    """`Annotated` marker: the field is left out of run ids and cache keys while at its declared default. Kept in
    the field's metadata only, so validation and the JSON Schema are as without it."""


KEY_OMIT_DEFAULT = KeyOmitDefault()


def is_marked(info: FieldInfo) -> bool:
    return any(isinstance(m, KeyOmitDefault) for m in info.metadata)


@functools.cache
def omitted_defaults(model: type[BaseModel]) -> Mapping[str, Any]:
    """Each marked field of `model` -> its default as JSON, the form a spec's JSON holds it in."""
    out = {}
    for name, info in model.model_fields.items():
        if not is_marked(info):
            continue
        if info.is_required() or info.default_factory is not None:
            raise TypeError(f"{model.__name__}.{name} is marked KEY_OMIT_DEFAULT but has no plain default: the "
                            "default is the value that keys as before the field existed")
        out[name] = to_jsonable_python(info.default)
    return out


def submodels(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The pydantic models a field's annotation holds (`X | None`, `tuple[X, ...]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    return tuple(m for arg in get_args(annotation) for m in submodels(arg))


def trim(data: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A copy of `data`, the JSON of a `model`, without the marked fields that hold their default, in it and in
    every nested model. Keys `model` does not declare are kept as they are (a record's JSON is not trusted to
    match today's models: it is hashed as it stands, less only what is marked)."""
    omit = omitted_defaults(model)
    out = {}
    for key, value in data.items():
        if key in omit and value == omit[key]:
            continue
        info = model.model_fields.get(key)
        out[key] = _trim_value(value, submodels(info.annotation) if info is not None else ())
    return out


def _trim_value(value: Any, models: tuple[type[BaseModel], ...]) -> Any:
    if len(models) != 1:  # plain values; a union of models is refused by `key_models` (a test walks them all)
        return value
    if isinstance(value, Mapping):
        return trim(value, models[0])
    if isinstance(value, list | tuple):
        return [_trim_value(v, models) for v in value]
    return value


def nested_models(*roots: type[BaseModel]) -> list[type[BaseModel]]:
    """The roots and every model nested in their fields, each once, in the order found."""
    found: list[type[BaseModel]] = []
    todo = list(roots)
    while todo:
        model = todo.pop(0)
        if model not in found:
            found.append(model)
            todo.extend(m for info in model.model_fields.values() for m in submodels(info.annotation))
    return found


def key_models(*roots: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model whose fields enter a key, by class name: the roots and the models nested in their fields."""
    found: dict[str, type[BaseModel]] = {}
    for model in nested_models(*roots):
        other = found.setdefault(model.__name__, model)
        if other is not model:
            raise TypeError(f"two key models are named {model.__name__}: {other} and {model}")
        for name, info in model.model_fields.items():
            if len(submodels(info.annotation)) > 1:
                raise TypeError(f"{model.__name__}.{name} may hold any of several models: a key cannot tell whose "
                                "markers apply")
    return dict(sorted(found.items()))


def stray_marks(config: type[BaseModel], shared: tuple[type[BaseModel], ...]) -> list[str]:
    """`Model.field` of each marker in a plugin's config that keys would not honour. Keys read markers only from
    the spec models and the `shared` options, never from a plugin's own fields (a record is keyed without
    importing its plugins), so a config may only inherit the shared options' markers, defaults unchanged."""
    allowed, shared_models = union_defaults(shared), set(nested_models(*shared))
    missing = object()
    return [f"{model.__name__}.{name}" for model in nested_models(config) if model not in shared_models
            for name, default in omitted_defaults(model).items()
            if model is not config or allowed.get(name, missing) != default]


def snapshot(models: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """What the keys of `models` hash today: each model's unmarked fields, and its marked ones with defaults."""
    return {"keyed": {n: sorted(set(m.model_fields) - set(omitted_defaults(m))) for n, m in models.items()},
            "omitted_at_default": {n: dict(sorted(omitted_defaults(m).items())) for n, m in models.items()
                                   if omitted_defaults(m)}}


def read_snapshot(path: Path = SNAPSHOT_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


def snapshot_problems(models: Mapping[str, type[BaseModel]], committed: Mapping[str, Any]) -> list[str]:
    """Every way the keys of `models` differ from the committed snapshot: each would re-key committed runs."""
    now, missing = snapshot(models), object()
    problems = [f"{name} is no longer a key model: the committed run ids hashed its fields"
                for name in sorted(set(committed["keyed"]) - set(models))]
    for name in models:
        keyed, was_keyed = set(now["keyed"][name]), set(committed["keyed"].get(name, ()))
        marked, was_marked = now["omitted_at_default"].get(name, {}), committed["omitted_at_default"].get(name, {})
        problems += [f"{name}.{f} is a new field without KEY_OMIT_DEFAULT: it would enter every run id and re-key "
                     "every committed run. Declare it `Annotated[..., KEY_OMIT_DEFAULT]` with the default that "
                     "behaves as before; only to re-key on purpose (a new protocol version) add it to "
                     f"{SNAPSHOT_FILE.parent.name}/{SNAPSHOT_FILE.name}"
                     for f in sorted(keyed - was_keyed - set(was_marked))]
        problems += [f"{name}.{f} entered the committed run ids and is now {'marked' if f in marked else 'gone'}: "
                     "that changes them" for f in sorted(was_keyed - keyed)]
        problems += [f"{name}.{f} was left out of run ids at {d!r}; now "
                     f"{'at ' + repr(marked[f]) if f in marked else 'unmarked or gone'}: that changes them"
                     for f, d in sorted(was_marked.items()) if marked.get(f, missing) != d]
    return problems


def union_defaults(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """The marked fields of several models at once; one field marked with two defaults is an error."""
    out: dict[str, Any] = {}
    for model in models:
        for name, default in omitted_defaults(model).items():
            if out.setdefault(name, default) != default:
                raise TypeError(f"{name} is marked with two defaults ({out[name]!r}, {default!r})")
    return out
