"""MkDocs hooks of the documentation site (mkdocs.yml `hooks:`).

A page holding the line ``<!-- spikeforge:include PATH -->`` gets the Markdown file PATH
(relative to the repository root) in its place when the site is built, so docs/results.md shows
benchmarks/RESULTS.md as it is now, never a stale copy. The included file is adapted to its new
place: its headings move one level down (the page has its own title), a relative image is
embedded (as a data URI), and a relative link to a file outside the site becomes the file's path
in the repository, as code.

The API pages list what is generated at import time and so invisible to a reading of the source:
``<!-- spikeforge:neuron-modules -->`` becomes one entry per neuron module in
``spikeforge.nn.MODULES`` (one per registered neuron), ``<!-- spikeforge:functional-shortcuts -->``
a table of the functional shortcuts of every registered neuron.
"""
from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path

INCLUDE = re.compile(r"^<!-- spikeforge:include (\S+) -->$", re.M)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _link(match: re.Match, base: Path, root: Path) -> str:
    bang, text, target = match.groups()
    if re.match(r"^[a-z]+:|^#|^/", target):
        return match.group(0)
    path = (base / target.split("#", 1)[0]).resolve()     # a section of a file (x.md#part): the file
    if not path.is_file():
        raise ValueError(f"{base / target} (linked from an included file) does not exist")
    if bang:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{text}](data:{mime};base64,{data})"
    shown = f"`{path.relative_to(root).as_posix()}`"
    return text if text.strip("`") == shown.strip("`") else f"{text} ({shown})"


def adapt(text: str, base: Path, root: Path) -> str:
    """``text`` (a Markdown file in folder ``base``) ready to sit inside another page."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            if line.startswith("#"):
                line = "#" + line
            line = LINK.sub(lambda m: _link(m, base, root), line)
        out.append(line)
    return "\n".join(out) + "\n"


def _neuron_modules() -> str:
    import spikeforge.nn
    from spikeforge.nn import MODULES

    # a neuron registered outside spikeforge.nn's own list (XyloLIF) is reached through its
    # module __getattr__, which static and dynamic analysis alike cannot follow: it is named here
    others = [name for name in MODULES if name not in vars(spikeforge.nn)]
    note = ("Also generated, reached as `spikeforge.nn.<name>`: " + ", ".join(f"`{n}`" for n in others)
            + " (see `spikeforge.neurons`).\n\n") if others else ""
    entry = "::: spikeforge.nn.{}\n    options:\n      force_inspection: true\n      heading_level: 3\n"
    return note + "\n".join(entry.format(name) for name in MODULES if name not in others)


def _functional_shortcuts() -> str:
    from spikeforge import functional
    from spikeforge.neurons import REGISTRY

    rows = ["| neuron | sequence `(T, B, ...)` | one step `(B, ...)` |", "|---|---|---|"]
    for name in REGISTRY:
        f = name.lower()
        if f not in functional.__all__:
            continue
        rows.append(f"| `{name}` | `{f}(x, state=None, *, surrogate=None, backend=None, **params)` "
                    f"| `{f}_step(x_t, state=None, *, surrogate=None, **params)` |")
    return "\n".join(rows) + "\n"


GENERATED = {"neuron-modules": _neuron_modules, "functional-shortcuts": _functional_shortcuts}
MARKER = re.compile(r"^<!-- spikeforge:(" + "|".join(GENERATED) + r") -->$", re.M)


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = _root(config)
    markdown = MARKER.sub(lambda m: GENERATED[m.group(1)](), markdown)

    def include(match: re.Match) -> str:
        path = root / match.group(1)
        return adapt(path.read_text(encoding="utf-8"), path.parent, root)

    return INCLUDE.sub(include, markdown)
