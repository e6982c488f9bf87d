"""Root variable values: where they come from and how they are checked.

Precedence, lowest first (as Terraform): the declared `default`, the
environment file's `variables`, `MLFORM_VAR_<name>` environment variables,
each `--var-file` in order, each `--var K=V` in order.  Values are converted
to the declared type, validated, and sensitive ones are wrapped so they never
reach output or disk in clear.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlform.specs import did_you_mean
from mlform.config.loader import display_path
from mlform.config.model import Module, StackConfig, Variable, VariableValues
from mlform.config.syntax import PARSERS, SpecLoader
from mlform.diagnostics import Diagnostic, DiagnosticError, SourceRange, error
from mlform.expr import ExprError, Scope, Sensitive, parse_expression

ENV_PREFIX = "MLFORM_VAR_"
#: `Diagnostic.code` of a required root variable without a value (validate accepts it)
MISSING_VARIABLE = "missing_variable"


@dataclass
class RawValue:
    """A value before type conversion, and where it came from (for messages)."""

    value: Any
    origin: str
    source: SourceRange | None = None
    from_cli_text: bool = False   # a --var / env string: may need parsing for non-string types


def parse_var_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise DiagnosticError.single(f'Invalid --var "{text}"',
                                     hint="Write --var NAME=VALUE.")
    name, value = text.split("=", 1)
    return name.strip(), value


def _read_var_file(path: Path) -> dict[str, RawValue]:
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a NUL byte or an over-long name
        found = False
    if not found:
        raise DiagnosticError.single(f"Variable file not found: {path}",
                                     hint="Check the --var-file path.")
    shown = display_path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot read variable file: {exc.strerror}",
                                     source=SourceRange(shown)) from None
    except UnicodeDecodeError:
        raise DiagnosticError.single("Variable file is not valid UTF-8", source=SourceRange(shown),
                                     hint="Save the file as UTF-8.") from None
    if path.suffix in (".yaml", ".yml", ".json"):
        try:
            data = yaml.load(text, Loader=SpecLoader) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise DiagnosticError.single(
                f"Invalid variable file: {getattr(exc, 'problem', None) or exc}",
                source=SourceRange(shown, mark.line + 1, mark.column + 1) if mark
                else SourceRange(shown))
        if not isinstance(data, dict):
            raise DiagnosticError.single("A variable file must be a mapping of names to values",
                                         source=SourceRange(shown, 1, 1))
        return {str(k): RawValue(v, shown, SourceRange(shown)) for k, v in data.items()}
    body, diags = PARSERS[".hcl"](text, shown)
    if diags:
        raise DiagnosticError(diags)
    out: dict[str, RawValue] = {}
    problems: list[Diagnostic] = []
    for name, attr in body.attributes.items():
        if attr.expr.references:
            problems.append(error("Variable files hold literal values only", source=attr.source,
                                  hint="Write the value itself, not a reference."))
            continue
        try:
            out[name] = RawValue(attr.expr.evaluate(Scope({}, path.parent)), shown, attr.source)
        except ExprError as exc:
            problems.append(exc.diagnostic())
    if problems:
        raise DiagnosticError(problems)
    return out


def _from_text(var: Variable, raw: RawValue) -> Any:
    """A --var or env string: strings stay strings, other types are parsed as HCL literals."""
    text = raw.value
    type_name = str(var.type) if var.type is not None else "string"
    if type_name == "string":
        return text
    try:
        expr = parse_expression(text, raw.origin)
        if not expr.references:
            return expr.evaluate(Scope({}))
    except ExprError:
        pass
    return text  # let type conversion explain what was expected


def convert(var: Variable, raw: Any, where: SourceRange | None, origin: str) -> Any:
    if raw is None:
        if not var.nullable:
            raise DiagnosticError.single(f'Variable "{var.name}" must not be null',
                                         source=where or var.source)
        return None
    if var.type is None:
        return raw
    try:
        return var.type.convert(raw)
    except ExprError as exc:
        # The conversion message quotes the value: never for a sensitive variable.
        detail = (f"The value set by {origin} is not {var.type}." if var.sensitive
                  else f"{exc.detail} Set by {origin}.")
        raise DiagnosticError.single(
            f'Invalid value for variable "{var.name}"', detail=detail,
            source=where or var.source,
            hint=f"The type is {var.type} (declared at {var.source}).")


def check_validations(var: Variable, value: Any, base_dir: Path) -> list[Diagnostic]:
    diags = []
    scope = Scope({"var": {var.name: value}}, base_dir)
    for rule in var.validations:
        try:
            ok = rule.condition.evaluate(scope)
        except ExprError as exc:
            diags.append(exc.diagnostic())
            continue
        if isinstance(ok, Sensitive):
            ok = ok.value
        if ok is not True:
            diags.append(error(f'Invalid value for variable "{var.name}"', detail=rule.error_message,
                               source=rule.source,
                               hint="This check is the variable's validation block."))
    return diags


def resolve_root_variables(config: StackConfig, cli_vars: list[str], var_files: list[Path],
                           environ: dict[str, str] | None = None) -> VariableValues:
    """Every root variable's final value; raises DiagnosticError listing every problem."""
    root: Module = config.root
    environ = os.environ if environ is None else environ
    raw: dict[str, RawValue] = {}
    diags: list[Diagnostic] = []

    for name, expr in config.env.variables.items():
        raw[name] = RawValue(expr.evaluate(Scope({})), f"environment {config.env.name}",
                             getattr(expr, "source", None))
    for key, text in environ.items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):] in root.variables:
            raw[key[len(ENV_PREFIX):]] = RawValue(text, f"${key}", None, True)
    for f in var_files:
        try:
            raw.update(_read_var_file(Path(f)))
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
    for text in cli_vars:
        try:
            name, value = parse_var_arg(text)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        raw[name] = RawValue(value, "--var", None, True)

    for name, rv in raw.items():
        if name not in root.variables:
            hint = did_you_mean(name, root.variables) or (
                f'Declare it in the stack: variable "{name}" {{ }}')
            diags.append(error(f'Value for undeclared variable "{name}"', source=rv.source,
                               detail=f"Set by {rv.origin}.", hint=hint))

    out = VariableValues()
    for name, var in root.variables.items():
        try:
            if name in raw:
                rv = raw[name]
                value = _from_text(var, rv) if rv.from_cli_text else rv.value
                value = convert(var, value, rv.source, rv.origin)
            elif var.has_default:
                value = convert(var, var.default.evaluate(Scope({}, config.stack_dir)), var.source,
                                "its default")
            else:
                diags.append(error(f'No value for required variable "{name}"', source=var.source,
                                   detail=var.description, code=MISSING_VARIABLE,
                                   hint=f"Pass --var {name}=VALUE, set {ENV_PREFIX}{name}, "
                                        f"or give it a default."))
                continue
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        except ExprError as exc:
            diags.append(exc.diagnostic())
            continue
        diags.extend(check_validations(var, value, config.stack_dir))
        if var.sensitive:
            out.sensitive.add(name)
            value = Sensitive(value)
        out.values[name] = value
    if diags:
        raise DiagnosticError(diags)
    return out


__all__ = ["resolve_root_variables", "VariableValues", "convert", "check_validations",
           "parse_var_arg", "ENV_PREFIX", "MISSING_VARIABLE"]
