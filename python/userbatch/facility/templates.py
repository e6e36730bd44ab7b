"""Job templates: what a templated job accepts, read from ``conf/templates/<name>.yaml``.

A template names the job (its ``entry`` function, and the ``script`` under ``jobs/`` for spark-submit) and
declares every parameter with a type, a default or ``required: true``, optional bounds or choices, and a help
line. :meth:`Template.resolve` turns what a user gave (a job file and ``-p key=value`` overrides) into the complete,
typed parameter set that runs — and that provenance records, so a re-run needs nothing but that record.

Everything a user can get wrong here — an unknown parameter, a wrong type, a value out of bounds, a malformed YAML
file, a template name with path tricks — raises :class:`TemplateError` naming the parameter and what is allowed.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import settings
from ..errors import UserbatchError
from ..resources import conf
from ..tables.names import parse_table_name

log = logging.getLogger(__name__)

TYPES = ("string", "table", "integer", "number", "boolean", "string_list", "mapping")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PARAM_KEYS = {"type", "default", "required", "choices", "minimum", "maximum", "exclusive_minimum", "help"}


class TemplateError(UserbatchError):
    """A job template, job file or parameter value that cannot be used as given."""


def template_dirs() -> list[Path]:
    """Where templates are looked up: ``USERBATCH_TEMPLATE_PATH`` (``:``-separated) first, then the
    shipped ``conf/templates`` (the repository's in a checkout: :mod:`userbatch.resources`)."""
    dirs = list(settings().template_path)
    dirs.append(conf("templates"))
    return dirs


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    help: str = ""

    def check(self, value: Any) -> Any:
        """``value`` converted to this parameter's type, or TemplateError. ``None`` passes where the default is
        ``None`` (an optional parameter left unset)."""
        if value is None:
            if self.required or self.default is not None:
                raise TemplateError(f"parameter {self.name!r} must not be null")
            return None
        v = self._convert(value)
        if self.choices is not None and v not in self.choices:
            raise TemplateError(f"parameter {self.name!r} must be one of {', '.join(map(str, self.choices))}; "
                                f"got {v!r}")
        if self.type in ("integer", "number"):
            if self.minimum is not None and v < self.minimum:
                raise TemplateError(f"parameter {self.name!r} must be >= {self.minimum}; got {v!r}")
            if self.exclusive_minimum is not None and v <= self.exclusive_minimum:
                raise TemplateError(f"parameter {self.name!r} must be > {self.exclusive_minimum}; got {v!r}")
            if self.maximum is not None and v > self.maximum:
                raise TemplateError(f"parameter {self.name!r} must be <= {self.maximum}; got {v!r}")
        return v

    def _convert(self, value: Any) -> Any:
        t, name = self.type, self.name
        if t in ("string", "table"):
            if not isinstance(value, str):
                raise TemplateError(f"parameter {name!r} must be a string; got {value!r}")
            if t == "table":
                try:
                    parse_table_name(value)
                except UserbatchError as e:
                    raise TemplateError(f"parameter {name!r}: {e}") from None
            return value
        if t == "boolean":
            if isinstance(value, bool):
                return value
            raise TemplateError(f"parameter {name!r} must be true or false; got {value!r}")
        if t == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TemplateError(f"parameter {name!r} must be an integer; got {value!r}")
            return value
        if t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TemplateError(f"parameter {name!r} must be a finite number; got {value!r}")
            return float(value)
        if t == "string_list":
            if isinstance(value, str):  # -p columns=a,b,c
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TemplateError(f"parameter {name!r} must be a list of strings; got {value!r}")
            return list(value)
        if t == "mapping":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise TemplateError(f"parameter {name!r} must be a mapping; got {value!r}")
            return dict(value)
        raise AssertionError(t)


@dataclass(frozen=True)
class Template:
    name: str
    entry: str  # "module:function" taking (params, provenance) and returning a summary dict
    script: str  # the spark-submit entry point, relative to the repository root
    description: str
    params: dict[str, Param] = field(default_factory=dict)
    path: Path | None = None

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """The full parameter set: every declared parameter, given or defaulted, checked and typed."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise TemplateError(f"template {self.name!r} has no parameter(s) {', '.join(unknown)}; it takes "
                                f"{', '.join(self.params)}")
        out = {}
        for name, p in self.params.items():
            if name in values:
                out[name] = p.check(values[name])
            elif p.required:
                raise TemplateError(f"template {self.name!r} needs parameter {name!r} ({p.help or p.type})")
            else:
                out[name] = p.default
        return out

    def function(self):
        module, _, func = self.entry.partition(":")
        return getattr(importlib.import_module(module), func)

    def usage(self) -> str:
        lines = [f"{self.name}: {self.description.strip()}", f"  spark-submit {self.script} -p key=value ...", ""]
        for p in self.params.values():
            extra = "required" if p.required else f"default {p.default!r}"
            if p.choices:
                extra += f"; one of {', '.join(map(str, p.choices))}"
            lines.append(f"  {p.name} ({p.type}; {extra}): {p.help}")
        return "\n".join(lines)


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise TemplateError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise TemplateError(f"cannot read {what} {path}: {e.strerror}") from None


def parse_template(doc: Any, path: Path | None = None) -> Template:
    """Check a template document; every mistake names the key."""
    where = f"template {path}" if path else "template"
    if not isinstance(doc, dict):
        raise TemplateError(f"{where} must be a mapping with name, entry, script, description, parameters")
    missing = [k for k in ("name", "entry", "script", "parameters") if k not in doc]
    if missing:
        raise TemplateError(f"{where} lacks {', '.join(missing)}")
    extra = sorted(set(doc) - {"name", "entry", "script", "description", "parameters"})
    if extra:
        raise TemplateError(f"{where}: unknown key(s) {', '.join(extra)}")
    if not isinstance(doc["name"], str) or not _NAME.match(doc["name"]):
        raise TemplateError(f"{where}: name must be a lower-case identifier; got {doc['name']!r}")
    if not isinstance(doc["entry"], str) or ":" not in doc["entry"]:
        raise TemplateError(f"{where}: entry must be 'module:function'; got {doc['entry']!r}")
    if not isinstance(doc["parameters"], dict):
        raise TemplateError(f"{where}: parameters must be a mapping of name -> specification")
    params = {}
    for name, spec in doc["parameters"].items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise TemplateError(f"{where}: parameter name {name!r} must be a lower-case identifier")
        if not isinstance(spec, dict):
            raise TemplateError(f"{where}: parameter {name!r} must be a mapping (type, default, help, ...)")
        bad = sorted(set(spec) - _PARAM_KEYS)
        if bad:
            raise TemplateError(f"{where}: parameter {name!r} has unknown key(s) {', '.join(bad)}")
        if spec.get("type") not in TYPES:
            raise TemplateError(f"{where}: parameter {name!r} type must be one of {', '.join(TYPES)}; "
                                f"got {spec.get('type')!r}")
        p = Param(name=name, type=spec["type"], default=spec.get("default"), required=bool(spec.get("required")),
                  choices=tuple(spec["choices"]) if spec.get("choices") is not None else None,
                  minimum=spec.get("minimum"), maximum=spec.get("maximum"),
                  exclusive_minimum=spec.get("exclusive_minimum"), help=str(spec.get("help", "")))
        if p.required and "default" in spec:
            raise TemplateError(f"{where}: parameter {name!r} is required and has a default; choose one")
        if p.default is not None:
            try:
                p.check(p.default)
            except TemplateError as e:
                raise TemplateError(f"{where}: the default of {name!r} is not valid: {e}") from None
        params[name] = p
    return Template(name=doc["name"], entry=doc["entry"], script=str(doc["script"]),
                    description=str(doc.get("description", "")), params=params, path=path)


def load_template(name: str) -> Template:
    """The template called ``name`` (a plain identifier: never a path) from :func:`template_dirs`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TemplateError(f"template name {name!r} must be a lower-case identifier (no paths); "
                            f"known: {', '.join(list_templates()) or 'none'}")
    for d in template_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            t = parse_template(_load_yaml(path, "template"), path)
            if t.name != name:
                raise TemplateError(f"template {path} calls itself {t.name!r}, not {name!r}")
            return t
    raise TemplateError(f"no job template {name!r}; known: {', '.join(list_templates()) or 'none'}")


def list_templates() -> list[str]:
    names = set()
    for d in template_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml") if _NAME.match(p.stem))
    return sorted(names)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["radius_arcsec=2", "one_to_one=true", "left_columns=[objectId, coord_ra]"]`` -> typed values.

    Each value is read as YAML (numbers, true/false, null, lists, mappings); a value that is not valid YAML is kept
    as the string given."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TemplateError(f"parameter override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def read_job_file(path: str | Path, template: str | None = None) -> tuple[str, dict[str, Any]]:
    """A job file: ``template: NAME`` and ``parameters: {...}``. Returns (template name, parameters)."""
    path = Path(path)
    doc = _load_yaml(path, "job file")
    if not isinstance(doc, dict):
        raise TemplateError(f"job file {path} must be a mapping with 'template' and 'parameters'")
    extra = sorted(set(doc) - {"template", "parameters"})
    if extra:
        raise TemplateError(f"job file {path}: unknown key(s) {', '.join(extra)}; expected template, parameters")
    name = doc.get("template", template)
    if name is None:
        raise TemplateError(f"job file {path} does not say which template it is for ('template: NAME')")
    if template is not None and name != template:
        raise TemplateError(f"job file {path} is for template {name!r}, not {template!r}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise TemplateError(f"job file {path}: parameters must be a mapping")
    return name, params
