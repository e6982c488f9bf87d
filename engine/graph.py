"""The dependency graph of a stack's configuration.

Built in named steps (as Terraform's transformers are):

1. `_add_module_nodes`  - one node per variable, local, output and resource
   block of every module instance (`module.churn.dataset.x`).
2. `_add_reference_edges` - an edge for every reference in an expression and
   every `depends_on`, each edge remembering the file:line that made it.
3. `find_cycles` - a cycle is a diagnostic naming every edge of it.

Nodes are configuration blocks, not instances: `for_each`/`count` expand
during the walk, as in Terraform.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable

from mlform.config.model import RESOURCE_KINDS, Module, StackConfig
from mlform.diagnostics import Diagnostic, DiagnosticError, SourceRange, error

NODE_VARIABLE, NODE_LOCAL, NODE_OUTPUT, NODE_RESOURCE = "variable", "local", "output", "resource"


@dataclass
class Node:
    key: str                  # "module.m.dataset.d", "var.x", "module.m.output.o"
    type: str                 # one of NODE_*
    module: str               # "" or "module.m" (the module instance the node lives in)
    name: str
    config: Any               # Variable / (expr, source) / Output / Resource
    source: SourceRange | None
    deps: dict[str, SourceRange | None] = field(default_factory=dict)  # dep key -> where

    @property
    def label(self) -> str:
        return self.key


def _prefix(module: str) -> str:
    return f"{module}." if module else ""


class Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.modules: dict[str, Module] = {}        # module path -> its config
        self.parents: dict[str, tuple[str, str]] = {}  # module path -> (parent path, call name)

    def add(self, node: Node) -> None:
        self.nodes[node.key] = node

    def dependents(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {k: set() for k in self.nodes}
        for node in self.nodes.values():
            for dep in node.deps:
                out[dep].add(node.key)
        return out

    def topological(self) -> list[Node]:
        """Dependencies first; ties broken by key so the order is stable."""
        indegree = {k: len(n.deps) for k, n in self.nodes.items()}
        dependents = self.dependents()
        ready = [k for k, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            key = heapq.heappop(ready)
            order.append(self.nodes[key])
            for nxt in dependents[key]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, nxt)
        if len(order) != len(self.nodes):
            raise DiagnosticError(find_cycles(self))
        return order

    def resources(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == NODE_RESOURCE]

    def resource_edges(self) -> dict[str, set[str]]:
        """Resource → the resources it depends on, looking through variables and locals."""
        memo: dict[str, set[str]] = {}

        def reach(key: str, seen: frozenset) -> set[str]:
            if key in memo:
                return memo[key]
            found: set[str] = set()
            for dep in self.nodes[key].deps:
                if dep in seen:
                    continue
                if self.nodes[dep].type == NODE_RESOURCE:
                    found.add(dep)
                else:
                    found |= reach(dep, seen | {dep})
            memo[key] = found
            return found

        return {n.key: reach(n.key, frozenset({n.key})) for n in self.resources()}


# ------------------------------------------------------------------ steps


def _add_module_nodes(graph: Graph, module: Module, path: str) -> None:
    graph.modules[path] = module
    p = _prefix(path)
    for name, var in module.variables.items():
        graph.add(Node(f"{p}var.{name}", NODE_VARIABLE, path, name, var, var.source))
    for name, (expr, source) in module.locals.items():
        graph.add(Node(f"{p}local.{name}", NODE_LOCAL, path, name, expr, source))
    for name, out in module.outputs.items():
        graph.add(Node(f"{p}output.{name}", NODE_OUTPUT, path, name, out, out.source))
    for key, res in module.resources.items():
        graph.add(Node(f"{p}{key}", NODE_RESOURCE, path, res.name, res, res.source))
    for call_name, child in module.children.items():
        child_path = f"{p}module.{call_name}"
        graph.parents[child_path] = (path, call_name)
        _add_module_nodes(graph, child, child_path)


class _Resolver:
    """Maps a reference written in module `path` to the graph node it names."""

    def __init__(self, graph: Graph, diags: list[Diagnostic]) -> None:
        self.graph = graph
        self.diags = diags

    def targets(self, path: str, parts: tuple, source: SourceRange | None,
                allow_each: bool = False, allow_count: bool = False) -> list[str]:
        p = _prefix(path)
        module = self.graph.modules[path]
        root = parts[0] if parts else ""
        rest = parts[1:]
        if root == "var":
            if not rest or rest[0] not in module.variables:
                name = rest[0] if rest else ""
                from mlform.specs import did_you_mean
                self.diags.append(error(f'Reference to undeclared input variable "{name}"',
                                        source=source,
                                        hint=(did_you_mean(name, module.variables)
                                              or f'Declare it: variable "{name}" {{ }}') if name
                                        else "Write var.NAME."))
                return []
            return [f"{p}var.{rest[0]}"]
        if root == "local":
            if not rest or rest[0] not in module.locals:
                name = rest[0] if rest else ""
                from mlform.specs import did_you_mean
                self.diags.append(error(f'Reference to undeclared local value "{name}"',
                                        source=source,
                                        hint=(did_you_mean(name, module.locals) if name else "")
                                        or "Define it in a locals { } block."))
                return []
            return [f"{p}local.{rest[0]}"]
        if root in RESOURCE_KINDS:
            if not rest:
                self.diags.append(error(f'Invalid reference "{root}"', source=source,
                                        hint=f"Write {root}.NAME."))
                return []
            key = f"{root}.{rest[0]}"
            if key not in module.resources:
                from mlform.specs import did_you_mean
                hint = did_you_mean(key, module.resources) or (
                    f'Declare it: {root} "{rest[0]}" {{ ... }}')
                self.diags.append(error(f'Reference to undeclared resource "{key}"', source=source,
                                        hint=hint))
                return []
            return [f"{p}{key}"]
        if root == "module":
            if not rest or rest[0] not in module.children:
                name = rest[0] if rest else ""
                if name not in module.module_calls:  # a missing module dir was reported already
                    from mlform.specs import did_you_mean
                    self.diags.append(error(
                        f'Reference to undeclared module "{name}"', source=source,
                        hint=(did_you_mean(name, module.module_calls) if name else "")
                        or f'Declare it: module "{name or "NAME"}" {{ source = "./PATH" }}'))
                return []
            child = module.children[rest[0]]
            child_p = f"{p}module.{rest[0]}"
            if len(rest) >= 2:
                if rest[1] not in child.outputs:
                    self.diags.append(error(f'Module "{rest[0]}" has no output "{rest[1]}"',
                                            source=source,
                                            hint=("Its outputs: " + ", ".join(sorted(child.outputs)))
                                            if child.outputs else "It declares no outputs."))
                    return []
                return [f"{child_p}.output.{rest[1]}"]
            return [f"{child_p}.output.{o}" for o in child.outputs]
        if root == "each":
            if not allow_each:
                self.diags.append(error('"each" is only available with for_each', source=source,
                                        hint="Add for_each to this block, or remove each.* here."))
            return []
        if root == "count":
            if not allow_count:
                self.diags.append(error('"count" is only available with count', source=source,
                                        hint="Add count to this block, or remove count.* here."))
            return []
        if root in ("path", "env"):
            return []
        self.diags.append(error(f'Unknown name "{root}"', source=source,
                                hint="References start with var., local., module., each., count., "
                                     "path., env. or a resource kind (" + ", ".join(RESOURCE_KINDS) + ")."))
        return []


def _expr_refs(expr) -> Iterable:
    return getattr(expr, "references", ()) or ()


def _add_reference_edges(graph: Graph, diags: list[Diagnostic]) -> None:
    resolve = _Resolver(graph, diags)
    for node in list(graph.nodes.values()):
        path = node.module

        def link(parts, source, each=False, count=False, scope_path=path):
            for target in resolve.targets(scope_path, tuple(parts), source, each, count):
                if target != node.key:
                    node.deps.setdefault(target, source)
                else:
                    diags.append(error(f"Self-referential {node.key}", source=source,
                                       detail=f"{node.key} refers to itself.",
                                       hint="A block cannot use its own attributes; use self only in conditions."))

        if node.type == NODE_VARIABLE:
            # A module's input variable is set by the calling block, in the caller's scope.
            if path:
                parent, call = graph.parents[path]
                call_cfg = graph.modules[parent].module_calls[call]
                expr = call_cfg.inputs.get(node.name)
                for ref in _expr_refs(expr):
                    link(ref.parts, ref.source, scope_path=parent)
                for trav in call_cfg.depends_on:
                    link(trav.parts, trav.source, scope_path=parent)
        elif node.type == NODE_LOCAL:
            for ref in _expr_refs(node.config):
                link(ref.parts, ref.source)
        elif node.type == NODE_OUTPUT:
            for ref in _expr_refs(node.config.value):
                link(ref.parts, ref.source)
            for trav in node.config.depends_on:
                link(trav.parts, trav.source)
        else:
            res = node.config
            each, count = res.for_each is not None, res.count is not None
            for expr in res.attributes.values():
                for ref in _expr_refs(expr):
                    link(ref.parts, ref.source, each, count)
            for meta in (res.for_each, res.count):
                for ref in _expr_refs(meta):
                    link(ref.parts, ref.source)
            for trav in list(res.depends_on) + list(res.lifecycle.replace_triggered_by):
                if trav.parts and trav.parts[0] == "module" and len(trav.parts) == 2:
                    # depends_on a whole module: every resource inside it.
                    child = f"{_prefix(path)}module.{trav.parts[1]}"
                    inside = [k for k, n in graph.nodes.items()
                              if n.type == NODE_RESOURCE and n.module.startswith(child)]
                    if child not in graph.modules:
                        link(trav.parts, trav.source)
                    for k in inside:
                        node.deps.setdefault(k, trav.source)
                else:
                    link(trav.parts[:2], trav.source)
    # Unknown input names on module calls.
    for path, module in graph.modules.items():
        for call_name, call in module.module_calls.items():
            child = module.children.get(call_name)
            if child is None:
                continue
            for name in call.inputs:
                if name not in child.variables:
                    from mlform.specs import did_you_mean
                    diags.append(error(f'Module "{call_name}" has no input variable "{name}"',
                                       source=call.input_sources.get(name)
                                       or call.inputs[name].source,
                                       hint=did_you_mean(name, child.variables) or
                                       ("Its variables: " + ", ".join(sorted(child.variables)))))
            for vname, var in child.variables.items():
                if not var.has_default and vname not in call.inputs:
                    diags.append(error(f'Module "{call_name}" needs input "{vname}"',
                                       source=call.source,
                                       hint=f"Set it in the module block: {vname} = ..."))


def find_cycles(graph: Graph) -> list[Diagnostic]:
    """One diagnostic per cycle (strongly connected component), naming every edge with file:line."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # iterative Tarjan: deep graphs must not hit the recursion limit
        work = [(v, iter(sorted(graph.nodes[v].deps)))]
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on_stack.add(w)
                    work.append((w, iter(sorted(graph.nodes[w].deps))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop(); on_stack.discard(w); comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    comps.append(comp)

    for v in sorted(graph.nodes):
        if v not in index:
            strong(v)
    diags = []
    for comp in comps:
        members = set(comp)
        # Walk one cycle through the component to name its edges in order.
        start = min(comp)
        cycle = [start]
        seen = {start}
        cur = start
        while True:
            nxt = sorted(d for d in graph.nodes[cur].deps if d in members)
            step = next((d for d in nxt if d == start and len(cycle) > 1), None) or \
                next((d for d in nxt if d not in seen), None) or nxt[0]
            if step == start or step in seen:
                cycle.append(step)
                break
            cycle.append(step)
            seen.add(step)
            cur = step
        edges = []
        for a, b in zip(cycle, cycle[1:]):
            where = graph.nodes[a].deps.get(b)
            edges.append(f"  {a} -> {b}" + (f"  (at {where})" if where else ""))
        first = graph.nodes[cycle[0]].deps.get(cycle[1])
        diags.append(error(
            "Dependency cycle: " + " -> ".join(cycle),
            detail="\n".join(edges), source=first,
            hint="Break the cycle by removing one of these references or depends_on entries."))
    return diags


def build_graph(config: StackConfig) -> Graph:
    graph = Graph()
    diags: list[Diagnostic] = []
    _add_module_nodes(graph, config.root, "")
    _add_reference_edges(graph, diags)
    if diags:
        raise DiagnosticError(diags)
    cycles = find_cycles(graph)
    if cycles:
        raise DiagnosticError(cycles)
    return graph


# ------------------------------------------------------------------ rendering


def _id(key: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in key)


def to_dot(graph: Graph) -> str:
    lines = ["digraph mlform {", "  rankdir = \"RL\";", "  node [shape = box];"]
    edges = graph.resource_edges()
    for key in sorted(edges):
        lines.append(f'  "{key}";')
    for key in sorted(edges):
        for dep in sorted(edges[key]):
            lines.append(f'  "{key}" -> "{dep}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: Graph) -> str:
    lines = ["graph RL"]
    edges = graph.resource_edges()
    for key in sorted(edges):
        lines.append(f'  {_id(key)}["{key}"]')
    for key in sorted(edges):
        for dep in sorted(edges[key]):
            lines.append(f"  {_id(key)} --> {_id(dep)}")
    return "\n".join(lines) + "\n"


__all__ = ["Graph", "Node", "build_graph", "find_cycles", "to_dot", "to_mermaid",
           "NODE_VARIABLE", "NODE_LOCAL", "NODE_OUTPUT", "NODE_RESOURCE"]
