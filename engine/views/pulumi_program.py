"""Renderers of `mlform export pulumi`: a `PulumiProgram` value as the files of a Pulumi
Python project (``__main__.py``, ``Pulumi.yaml``, ``requirements.txt``) and as Pulumi's
bulk-import document (``pulumi import --file``).

Pure: strings in, strings out.  The program is written in one fixed layout (four-space
indents, a call's arguments one per line, short literals on one line) so an export of
the same stack is byte-for-byte the same file, and a diff of two exports shows what moved.
"""

from __future__ import annotations

import json
import keyword
import re
from typing import Any, Iterable, Mapping

from mlform.providers.base import PulumiAsset, PulumiInput, PulumiRef, PulumiResource
from mlform.pulumi_export import found_in

__all__ = ["REQUIREMENTS", "SDK_ALIASES", "main_py", "pulumi_yaml", "requirements_txt",
           "import_document", "variable_names"]

#: The SDK versions the exported programs are tested with (tests/pulumi).
REQUIREMENTS = {"pulumi": "3.272.0", "pulumi-aws": "7.51.1", "pulumi-kubernetes": "4.34.2"}
#: The first segment of `PulumiResource.module` -> (the Python package, its alias).
SDK_ALIASES = {"aws": ("pulumi_aws", "aws"), "kubernetes": ("pulumi_kubernetes", "kubernetes")}

WIDTH = 99


def variable_names(resources: Iterable[PulumiResource]) -> dict[str, str]:
    """Logical name -> the Python variable holding it: an identifier, unique, never a
    keyword, an SDK alias or a name the program itself uses."""
    taken = {"pulumi", "config", *(alias for _, alias in SDK_ALIASES.values())}
    out: dict[str, str] = {}
    for r in resources:
        base = re.sub(r"\W+", "_", r.name).strip("_").lower() or "resource"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = f"r_{base}"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        out[r.name] = name
    return out


def _expr(value: Any, names: Mapping[str, str], indent: int, lead: int = 0) -> str:
    """`value` as a Python expression, on one line when it fits (after `lead` characters
    already on the line, with the comma after it), else one item a line."""
    flat = _flat(value, names)
    if indent + lead + len(flat) + 1 <= WIDTH or not isinstance(value, (Mapping, list, tuple)):
        return flat
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            key = f"{json.dumps(str(k))}: "
            items.append(f"{inner}{key}{_expr(v, names, indent + 4, len(key))},")
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{_expr(v, names, indent + 4)}," for v in value]
    return "[\n" + "\n".join(items) + f"\n{pad}]"


def _flat(value: Any, names: Mapping[str, str]) -> str:
    if isinstance(value, PulumiInput):
        call = "require_secret" if value.secret else "require"
        return f"config.{call}({json.dumps(value.key)})"
    if isinstance(value, PulumiRef):
        return f"{names[value.name]}.{value.attr}"
    if isinstance(value, PulumiAsset):
        return f"pulumi.FileAsset({json.dumps(value.path)})"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        parts = [f"{json.dumps(str(k))}: {_flat(v, names)}" for k, v in value.items()]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(_flat(v, names)) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a Pulumi program")


def _call(r: PulumiResource, names: Mapping[str, str]) -> str:
    package = r.module.split(".", 1)[0]
    alias = SDK_ALIASES[package][1]
    path = ".".join([alias, *r.module.split(".")[1:], r.cls])
    lines = [f"{names[r.name]} = {path}(", f"    {json.dumps(r.name)},"]
    for key, value in r.args.items():
        lines.append(f"    {key}={_expr(value, names, 4, len(key) + 1)},")
    if r.depends_on:
        needs = ", ".join(names[n] for n in r.depends_on)
        lines.append(f"    opts=pulumi.ResourceOptions(depends_on=[{needs}]),")
    lines.append(")")
    return "\n".join(lines)


def _comment(text: str, prefix: str = "# ") -> list[str]:
    """`text` as comment lines no wider than the program's lines."""
    out: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            if line and len(prefix) + len(line) + 1 + len(word) > WIDTH:
                out.append(prefix + line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append((prefix + line).rstrip())
    return out


def main_py(*, header: str, resources: list[PulumiResource], notes: list[str],
            outputs: Mapping[str, Any], inputs: list[PulumiInput]) -> str:
    """The program: imports, the config it reads, one resource a statement (in an order
    where every `PulumiRef` points up), the notes (pipelines and runs) and the exports."""
    names = variable_names(resources)
    packages = sorted({r.module.split(".", 1)[0] for r in resources})
    lines = [f'"""{header}"""', "", "import pulumi"]
    lines += [f"import {SDK_ALIASES[p][0]} as {SDK_ALIASES[p][1]}" for p in packages]
    lines += ["", "config = pulumi.Config()"]
    if inputs:
        lines += ["", "# Set before `pulumi up`:"]
        for i in inputs:
            flag = " --secret" if i.secret else ""
            lines.append(f"#   pulumi config set{flag} {i.key} ...")
            if i.description:
                lines += _comment(i.description, "#     ")
    address = None
    for r in _ordered(resources):
        if r.address != address:
            lines += ["", "", f"# --- {r.address}"]
            address = r.address
        lines.append("")
        if r.comment:
            lines += _comment(r.comment)
        lines.append(_call(r, names))
    if notes:
        lines += ["", ""]
        for note in notes:
            lines += _comment(note) + ["#"]
        lines.pop()
    if outputs:
        lines += [""]
        for key, value in outputs.items():
            head = f"pulumi.export({json.dumps(key)}, "
            lines.append(f"{head}{_expr(value, names, 0, len(head))})")
    return "\n".join(lines) + "\n"


def _ordered(resources: list[PulumiResource]) -> list[PulumiResource]:
    """The resources as given, each moved after those it refers to (a stable sort)."""
    by_name = {r.name: r for r in resources}
    done: set[str] = set()
    out: list[PulumiResource] = []

    def visit(r: PulumiResource, seen: frozenset[str]) -> None:
        if r.name in done:
            return
        if r.name in seen:
            raise ValueError(f"Pulumi resources refer to each other in a cycle: {r.name}")
        for ref in [*(ref.name for ref in found_in(r.args, PulumiRef)), *r.depends_on]:
            if ref in by_name:
                visit(by_name[ref], seen | {r.name})
        done.add(r.name)
        out.append(r)

    for r in resources:
        visit(r, frozenset())
    return out


def pulumi_yaml(*, project: str, description: str, inputs: list[PulumiInput]) -> str:
    """Pulumi.yaml: the project, the Python runtime (a venv beside it) and the config
    keys the program requires (secret ones marked)."""
    lines = [f"name: {project}", "runtime:", "  name: python", "  options:",
             "    toolchain: pip", "    virtualenv: venv",
             f"description: {json.dumps(description)}"]
    if inputs:
        lines.append("config:")
        for i in inputs:
            lines += [f"  {i.key}:", "    type: string"]
            if i.description:
                lines.append(f"    description: {json.dumps(i.description)}")
            if i.secret:
                lines.append("    secret: true")
    return "\n".join(lines) + "\n"


def requirements_txt(packages: Iterable[str]) -> str:
    """requirements.txt: pulumi and the SDKs the program imports, at the tested versions."""
    wanted = ["pulumi", *sorted(SDK_ALIASES[p][0].replace("_", "-") for p in set(packages))]
    return "".join(f"{name}=={REQUIREMENTS[name]}\n" for name in wanted)


def import_document(resources: list[PulumiResource]) -> dict:
    """Pulumi's bulk-import document (``pulumi import --file``): one entry per resource
    that exists, by the logical name the program gives it, so an import followed by
    ``pulumi up`` adopts the objects instead of creating them again."""
    return {"resources": [{"type": r.token, "name": r.name, "id": r.import_id}
                          for r in _ordered(resources) if r.import_id]}
