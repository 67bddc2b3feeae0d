"""A bound on YAML alias expansion, checked before a pipeline is composed.

Composing shares an anchored node between its aliases, so a "billion laughs" document
(``a: &a [x, x, ...]``, ``b: &b [*a, *a, ...]``, nine levels deep) composes in
microseconds; it explodes later, when a field such as ``schema:`` or ``replies:`` is
turned into Python values (at ``run``, after ``validate`` said yes). So the parser's
events are counted first: each anchor's expanded size, and for each alias the nodes it
adds. Past ``MAX_ALIAS_NODES`` the pipeline is refused at the alias that crossed the
bound, file:line:col, whatever field it sits in.
"""

from __future__ import annotations

import yaml

from agentsaga.errors import PipelineError

#: Nodes that aliases may add to a pipeline. A pipeline's own nodes are bounded by its
#: size; what aliases add is not. Sharing a step's settings through anchors adds tens.
MAX_ALIAS_NODES = 100_000

_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check(text: str, path: str) -> None:
    """Raise a located PipelineError if aliases expand past the bound. YAML errors are
    left to the composer, whose messages are the documented ones."""
    if "*" not in text or "&" not in text:
        return  # no alias, or nothing anchored: nothing to expand
    sizes: dict[str, int] = {}
    frames: list[list[int | str | None]] = []  # [expanded size, anchor] per open collection
    added = 0
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                frames.append([1, event.anchor])
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                size, anchor = frames.pop()
                assert isinstance(size, int)
            elif isinstance(event, yaml.ScalarEvent):
                size, anchor = 1, event.anchor
            elif isinstance(event, yaml.AliasEvent):
                size, anchor = sizes.get(event.anchor or "", 1), None
                added += size
                if added > MAX_ALIAS_NODES:
                    mark = event.start_mark
                    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
                    raise PipelineError(
                        path,
                        line,
                        col,
                        f"YAML aliases expand this pipeline past {MAX_ALIAS_NODES:,} nodes "
                        f"(*{event.anchor} adds {size:,}); write the values out instead",
                    )
            else:
                continue
            if isinstance(anchor, str):
                sizes[anchor] = size
            if frames:
                total = frames[-1][0]
                assert isinstance(total, int)
                frames[-1][0] = total + size
    except yaml.YAMLError:
        return
