"""The human form of `mlform import-state pulumi` (`pulumi_import.ImportProposal`)."""

from __future__ import annotations

from mlform.pulumi_import import ImportProposal

__all__ = ["render_proposal"]


def render_proposal(p: ImportProposal) -> str:
    lines = [f"From {p.file}:", ""]
    ready = [i for i in p.imports if i.in_spec and not i.managed]
    if ready:
        lines.append("Import into mlform (the spec has these blocks):")
        lines += [f"  {i.command}" + (f"    # {i.note}" if i.note else "") for i in ready]
        lines.append("")
    unwritten = [i for i in p.imports if not i.in_spec and not i.managed]
    if unwritten:
        lines.append("Write these blocks first, then import (mlform import needs the block):")
        for i in unwritten:
            lines.append(f"  {i.command}    # {i.kind} from {i.type}"
                         + (f"; {i.note}" if i.note else ""))
        lines.append("")
    managed = [i for i in p.imports if i.managed]
    if managed:
        lines.append("Already managed by mlform (nothing to do):")
        lines += [f"  {i.address} ({i.id})" for i in managed]
        lines.append("")
    if p.parts:
        lines.append("Come along with the imports above:")
        lines += [f"  {part.urn.rsplit('::', 1)[-1]} ({part.type}) -> {part.address}"
                  + (f": {part.note}" if part.note else "") for part in p.parts]
        lines.append("")
    if p.recreate:
        lines.append("Recognised, but mlform cannot import them: write the block, apply, then "
                     "retire these in Pulumi:")
        lines += [f"  {r.urn.rsplit('::', 1)[-1]} ({r.type}) -> {r.address}"
                  + (f": {r.note}" if r.note else "") for r in p.recreate]
        lines.append("")
    if p.unmatched:
        lines.append("No mlform equivalent (stay with Pulumi):")
        lines += [f"  {u.urn.rsplit('::', 1)[-1]} ({u.type})" for u in p.unmatched]
        lines.append("")
    lines.append(f"{len(p.imports)} to import, {len(p.parts)} coming along, "
                 f"{len(p.recreate)} to re-create, {len(p.unmatched)} without an equivalent, "
                 f"{p.pulumi_internal} of Pulumi's own skipped.")
    return "\n".join(lines)
