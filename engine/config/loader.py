"""Load a stack directory, its modules and the chosen environment into a `StackConfig`.

A directory's stack files (a stack's or a module's) are its top-level `*.hcl`
files and its `*.mlform.yaml`/`*.mlform.yml`/`*.mlform.json` files: the
suffix keeps other YAML and JSON beside them out (a saved `plan --format
json`, a memory store, `params.yaml`), as `.tf.json` does for Terraform.
`environments/NAME.hcl` (or `.yaml`/`.yml`/`.json`, plain or `.mlform.`),
picked by name, sets the default provider, variable values, provider
overrides and the backend.  Every problem found is collected, so one run
reports them all.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

from mlform._gc import paused_gc
from mlform.config.decode import Decoder, decode_module, provider_config
from mlform.config.model import Environment, Module, StackConfig
from mlform.config.parse_cache import ParseCache
from mlform.config.syntax import LABELED, PARSERS, Body, parse_file, top_level_keys
from mlform.diagnostics import Diagnostic, DiagnosticError, SourceRange, error, warning

# The files of a stack or a module, by how their names end.
STACK_SUFFIXES = (".hcl", ".mlform.yaml", ".mlform.yml", ".mlform.json")
# YAML/JSON names that are not stack files (any more): named in hints.
_PLAIN_SUFFIXES = (".yaml", ".yml", ".json")
# An environment file is picked by name, so plain YAML/JSON names are fine there too;
# the first that exists wins, in this order.
ENV_SUFFIXES = (".hcl", ".mlform.yaml", ".mlform.yml", ".mlform.json", *_PLAIN_SUFFIXES)
ENV_DIR = "environments"
# Plain YAML/JSON files larger than this are not looked into for the warning below:
# spec files are small, saved plans and stores can be large.
_SNIFF_LIMIT = 4 * 1024 * 1024
# A plain file all of whose top-level keys are among these is taken for a spec file.
_SPEC_KEYS = LABELED | {"locals"}


def display_path(path: Path) -> str:
    """How a file is named in diagnostics: relative to the working directory when under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def is_stack_file(name: str) -> bool:
    """Whether a file of this name at a stack's (or module's) top level is part of it."""
    return name.endswith(STACK_SUFFIXES) and not name.startswith(".")


def spec_files(directory: Path) -> list[Path]:
    """The stack files of a directory, in name order (the order they are read in)."""
    return sorted(p for p in directory.iterdir() if is_stack_file(p.name) and p.is_file())


def _plain_files(directory: Path) -> list[Path]:
    """A directory's top-level YAML/JSON files that are not stack files, in name order."""
    try:
        return sorted(p for p in directory.iterdir()
                      if p.name.endswith(_PLAIN_SUFFIXES) and not p.name.startswith(".")
                      and not is_stack_file(p.name) and p.is_file())
    except OSError:
        return []


def _no_spec_files_hint(directory: Path, otherwise: str) -> str:
    """When a directory holds YAML/JSON files but no stack file, say how to make them one."""
    plain = [p.name for p in _plain_files(directory)]
    if not plain:
        return otherwise
    stem, _, suffix = plain[0].rpartition(".")
    shown = ", ".join(plain[:3]) + (", ..." if len(plain) > 3 else "")
    return (f"mlform reads *.hcl, *.mlform.yaml, *.mlform.yml and *.mlform.json files and leaves "
            f"other YAML and JSON alone ({shown}). If those are spec files, rename them: "
            f"{plain[0]} to {stem}.mlform.{suffix}.")


def unread_spec_files(directory: Path) -> list[Diagnostic]:
    """A warning for each plain YAML/JSON file of a directory that looks like a spec
    file (every top-level key is a block type) but is not read for want of the
    `.mlform.` suffix: stacks written before the suffix rule would otherwise lose
    those blocks silently (the plan would delete what they declared)."""
    found = []
    for path in _plain_files(directory):
        name = path.name
        try:
            if path.stat().st_size > _SNIFF_LIMIT:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        keys = top_level_keys(text, path.suffix)
        if keys and keys <= _SPEC_KEYS:
            stem, _, suffix = name.rpartition(".")
            found.append(warning(
                f"{name} looks like a spec file but is not read",
                detail="mlform reads *.hcl, *.mlform.yaml, *.mlform.yml and *.mlform.json "
                       "files; other YAML and JSON is left alone.",
                source=SourceRange(display_path(path)),
                hint=f"If it is a spec file, rename it to {stem}.mlform.{suffix}."))
    return found


def files_read(config: StackConfig) -> list[Path]:
    """Every spec file a loaded stack was read from: the root module's, its modules'
    (depth first) and the environment's, in the order they were first read."""
    files: dict[Path, None] = {}

    def walk(module: Module) -> None:
        files.update(dict.fromkeys(module.files))
        for child in module.children.values():
            walk(child)
    walk(config.root)
    if config.env.file is not None:
        files[config.env.file] = None
    return list(files)


class _Reader:
    """Reads files once, remembering their bytes for the config digest."""

    def __init__(self, cache: ParseCache | None = None) -> None:
        self.cache = cache
        self.digest = hashlib.sha256()
        self.diags: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def parse(self, path: Path) -> Body | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.diags.append(error(f"Cannot read spec file: {exc.strerror}",
                                    source=SourceRange(display_path(path))))
            return None
        self.digest.update(str(path.resolve()).encode() + b"\0" + data + b"\0")
        try:
            return parse_file(path, display_path(path), self.cache)
        except DiagnosticError as exc:
            self.diags.extend(exc.diagnostics)
            return None

    def module(self, directory: Path, chain: tuple[Path, ...] = ()) -> Module:
        module = Module(dir=directory)
        files = spec_files(directory)
        self.warnings.extend(unread_spec_files(directory))
        module.files = files
        bodies = [b for b in (self.parse(f) for f in files) if b is not None]
        self.diags.extend(decode_module(bodies, module))
        for name, call in module.module_calls.items():
            try:
                child_dir = (directory / call.source_path).resolve()
                found = child_dir.is_dir()
            except (OSError, ValueError):  # a NUL byte, a name too long, a symlink loop
                child_dir, found = directory / call.source_path, False
            if not found:
                self.diags.append(error(f'Module "{name}": source directory not found',
                                        detail=f"{call.source_path} resolves to {child_dir}.",
                                        source=call.source,
                                        hint=_similar_dir(call.source_path, child_dir) or
                                        "Module sources are local paths relative to the calling module."))
                continue
            if child_dir in chain or child_dir == directory.resolve():
                self.diags.append(error(f'Module "{name}" includes itself',
                                        source=call.source,
                                        detail=" -> ".join(str(p) for p in chain + (child_dir,))))
                continue
            if not spec_files(child_dir):
                self.diags.append(error(f'Module "{name}": no spec files in {call.source_path}',
                                        source=call.source, hint=_no_spec_files_hint(
                                            child_dir, "A module is a directory of stack files.")))
                continue
            module.children[name] = self.module(child_dir, chain + (directory.resolve(),))
        return module


def _similar_dir(written: str, missing: Path) -> str:
    """'Did you mean "./modules/tiny"?' when a sibling directory is spelled alike."""
    stem = written.rstrip("/")
    if not missing.name or not stem.endswith(missing.name):
        return ""
    try:
        siblings = [d.name for d in missing.parent.iterdir() if d.is_dir()]
    except (OSError, ValueError):
        return ""
    close = difflib.get_close_matches(missing.name, siblings, n=1, cutoff=0.75)
    return f'Did you mean "{stem[:-len(missing.name)]}{close[0]}"?' if close else ""


def _env_file(stack_dir: Path, env: str) -> Path | None:
    for suffix in ENV_SUFFIXES:
        candidate = stack_dir / ENV_DIR / f"{env}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _env_name(file_name: str) -> str | None:
    """`staging` for environments/staging.hcl, staging.yaml, staging.mlform.json, ..."""
    if file_name.startswith("."):
        return None
    for suffix in ENV_SUFFIXES:  # the .mlform. ones before the plain ones they end with
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[:-len(suffix)]
    return None


def available_environments(stack_dir: Path) -> list[str]:
    d = stack_dir / ENV_DIR
    if not d.is_dir():
        return []
    return sorted({name for name in map(_env_name, (p.name for p in d.iterdir())) if name})


def _decode_environment(name: str, path: Path, body: Body, root: Module,
                        diags: list[Diagnostic]) -> Environment:
    env = Environment(name=name, file=path)
    decoder = Decoder(root)
    decoder.unexpected(body, {"default_provider", "variables"}, {"provider", "backend", "variable"},
                       f"environment {name}")
    if "default_provider" in body.attributes:
        attr = body.attributes["default_provider"]
        value = decoder.constant(attr, "default_provider")
        env.default_provider = value if isinstance(value, str) and value else None
        if value is not None and env.default_provider is None:
            diags.append(error("default_provider must name a provider", source=attr.source,
                               detail=f"Got {value!r}.", hint='Write default_provider = "memory".'))
    if "variables" in body.attributes:
        attr = body.attributes["variables"]
        value = decoder.constant(attr, "variables")
        if isinstance(value, dict):
            env.variables = {k: _ConstantExpr(v, attr.expr.source) for k, v in value.items()}
        elif value is not None:
            diags.append(error("variables must map variable names to values", source=attr.source,
                               detail=f"Got {value!r}.", hint="Write variables = { epochs = 5 }."))
    for block in body.blocks:
        if block.type == "provider" and decoder.need_labels(block, 1, "TYPE"):
            config = provider_config(decoder, block)
            if config is not None:
                env.providers[config.key] = config
        elif block.type == "backend":
            env.backend_type = block.labels[0] if block.labels else "local"
            env.backend = {k: decoder.constant(a, f"backend {k}") for k, a in block.body.attributes.items()}
        elif block.type == "variable" and decoder.need_labels(block, 1, "NAME"):
            # `variable "x" { value = ... }` is an alternative spelling of variables = {...}.
            attr = block.body.attributes.get("value") or block.body.attributes.get("default")
            if attr is not None:
                env.variables[block.labels[0]] = _ConstantExpr(decoder.constant(attr, "value"), attr.source)
    diags.extend(decoder.diags)
    return env


class _ConstantExpr:
    """A literal value standing where an expression is expected (environment variable values)."""

    references: tuple = ()
    constant = True

    def __init__(self, value, source: SourceRange) -> None:
        self.value = value
        self.source = source

    def evaluate(self, scope):
        return self.value

    def static_traversal(self):
        return None

    def source_text(self) -> str:
        return repr(self.value)


def load_stack(stack_dir: Path, env: str | None = None) -> StackConfig:
    """Load and decode everything; raise DiagnosticError listing all problems."""
    stack_dir = Path(stack_dir)
    if not stack_dir.is_dir():
        raise DiagnosticError.single(f"Stack directory not found: {stack_dir}",
                                     hint="Run mlform in a stack directory, or pass it: mlform plan DIR.")
    if not spec_files(stack_dir):
        raise DiagnosticError.single(
            f"No spec files in {display_path(stack_dir)}",
            hint=_no_spec_files_hint(stack_dir, "A stack is a directory of *.hcl (or *.mlform.yaml, "
                                     "*.mlform.json) files. Try: mlform init DIR"))
    # Reading allocates many small objects that all stay alive: the cyclic collector's
    # passes over them would free nothing (mlform._gc).
    with paused_gc():
        return _load(stack_dir, env)


def _load(stack_dir: Path, env: str | None) -> StackConfig:
    reader = _Reader(ParseCache(stack_dir / ".mlform" / "cache" / "hcl",
                                only_under=stack_dir / ".mlform"))
    root = reader.module(stack_dir)
    environment = Environment(name="default")
    if env:
        path = _env_file(stack_dir, env)
        if path is None:
            known = available_environments(stack_dir)
            reader.diags.append(error(
                f'Unknown environment "{env}"',
                detail=f"There is no {ENV_DIR}/{env}.hcl (or .yaml/.json) in the stack "
                       f"({stack_dir.resolve()}).",
                hint=("Known environments: " + ", ".join(known)) if known else
                f"Create {ENV_DIR}/{env}.hcl to define it."))
        else:
            body = reader.parse(path)
            if body is not None:
                environment = _decode_environment(env, path, body, root, reader.diags)
    if reader.diags:
        raise DiagnosticError(reader.diags)
    return StackConfig(root=root, env=environment, stack_dir=stack_dir.resolve(),
                       digest=reader.digest.hexdigest(), warnings=reader.warnings)


__all__ = ["load_stack", "display_path", "spec_files", "is_stack_file", "files_read",
           "unread_spec_files",
           "available_environments", "STACK_SUFFIXES", "ENV_SUFFIXES"]
assert {"." + suffix.rsplit(".", 1)[1] for suffix in ENV_SUFFIXES} <= set(PARSERS)
