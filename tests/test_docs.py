"""The documentation site (mkdocs.yml, docs/).

* Every tutorial page (docs/index.md, docs/getting-started.md, docs/tutorials/*.md) is executed: its
  ```python blocks run in order, in one fresh namespace per page and a temporary working directory;
  any exception fails. A Chinese version *.zh.md must hold exactly its English page's code blocks
  (tested below), so running it again would repeat the same code (about a minute of CPU): it is
  not run. A block fenced as ```{.python .no-run} is shown but not run (the rule is stated in
  docs/tutorials/index.md).
* Each Chinese page holds exactly the code blocks of its English counterpart, and the pages that
  must be translated are.
* The site builds with `mkdocs build --strict` (any warning fails), when mkdocs is installed (the
  `docs` extra; `make test` installs it, and under CI a missing mkdocs fails instead of skipping).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)
# pages that must exist in Chinese (issue 14 §1)
TRANSLATED = ["getting-started.md", "tutorials/neurons.md", "tutorials/training.md", "tutorials/nir-hardware.md",
              "tutorials/equations.md", "tutorials/models.md", "tutorials/plots.md"]


def _tutorials() -> list[Path]:
    """The executed pages: the home page, getting started and every tutorial (not the tutorials'
    index), then the Chinese versions that exist."""
    pages = [DOCS / "index.md", DOCS / "getting-started.md"]
    pages += [p for p in sorted((DOCS / "tutorials").glob("*.md")) if not p.name.endswith(".zh.md") and p.name != "index.md"]
    return pages + [p.with_suffix(".zh.md") for p in pages if p.with_suffix(".zh.md").exists()]


def _english(pages: list[Path]) -> list[Path]:
    return [p for p in pages if not p.name.endswith(".zh.md")]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text: ``(info string, body)`` in order."""
    return [(m.group("info").strip(), m.group("body")) for m in FENCE.finditer(text)]


def runnable(text: str) -> list[str]:
    """The blocks a tutorial runs: fenced exactly as ```python (```{.python .no-run} is not)."""
    return [body for info, body in code_blocks(text) if info == "python"]


def test_code_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n\n```{.python .no-run}\ny = 2\n```\n  ```sh\n  ls\n  ```\n"
    assert code_blocks(text) == [("python", "x = 1\n"), ("{.python .no-run}", "y = 2\n"), ("sh", "  ls\n")]
    assert runnable(text) == ["x = 1\n"]


PAGES = _tutorials()


@pytest.fixture
def registry_restored():
    """A tutorial may register a neuron: afterwards the registry, the generated modules and the
    functional shortcuts are as they were, so the rest of the test session does not see it."""
    import spikeforge.functional
    import spikeforge.nn
    import spikeforge.nn.neuron
    from spikeforge.neurons import REGISTRY

    modules = (spikeforge.functional, spikeforge.nn, spikeforge.nn.neuron)
    saved = [dict(vars(m)) for m in modules]
    registry, built, exported = dict(REGISTRY), dict(spikeforge.nn.MODULES), list(spikeforge.functional.__all__)
    yield
    for m, names in zip(modules, saved):
        for name in set(vars(m)) - set(names):
            delattr(m, name)
    REGISTRY.clear()
    REGISTRY.update(registry)
    spikeforge.nn.MODULES.clear()
    spikeforge.nn.MODULES.update(built)
    spikeforge.functional.__all__[:] = exported


@pytest.mark.parametrize("page", _english(PAGES), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_tutorial_runs(page: Path, tmp_path, monkeypatch, registry_restored):
    blocks = runnable(page.read_text(encoding="utf-8"))
    assert blocks, f"{page.name} has no ```python block to run"
    monkeypatch.chdir(tmp_path)
    # the page runs as a module of its own (dataclasses and pickle look classes up by module)
    module = types.ModuleType("docs_" + re.sub(r"\W", "_", page.relative_to(DOCS).as_posix()[:-3]))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, block in enumerate(blocks, 1):
        code = compile(block, f"{page.relative_to(ROOT)} (python block {i})", "exec")
        exec(code, module.__dict__)  # noqa: S102 - the tutorial's own code


def test_every_capability_has_a_tutorial():
    names = {p.relative_to(DOCS).as_posix() for p in _english(PAGES)}
    expected = {"getting-started.md", "tutorials/neurons.md", "tutorials/backends.md",
                "tutorials/encoders-layers.md", "tutorials/training.md", "tutorials/streaming.md",
                "tutorials/nir-hardware.md", "tutorials/eventprop.md", "tutorials/local-rules-conversion.md",
                "tutorials/datasets.md", "tutorials/distributed.md", "tutorials/equations.md",
                "tutorials/models.md", "tutorials/plots.md"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("page", TRANSLATED)
def test_chinese_version_has_the_english_code(page: str):
    en = DOCS / page
    zh = en.with_suffix(".zh.md")
    assert zh.exists(), f"{zh.relative_to(ROOT)} (the Chinese version of {page}) is missing"
    en_blocks, zh_blocks = code_blocks(en.read_text(encoding="utf-8")), code_blocks(zh.read_text(encoding="utf-8"))
    assert [b for _, b in en_blocks], f"{page} has no code"
    assert zh_blocks == en_blocks, f"{zh.name}'s code blocks differ from {page}'s: translate the prose only"


def test_every_chinese_page_has_an_english_one():
    for zh in DOCS.rglob("*.zh.md"):
        en = zh.with_name(zh.name[: -len(".zh.md")] + ".md")
        assert en.exists(), f"{zh.relative_to(ROOT)} has no English page {en.name}"
        assert code_blocks(zh.read_text(encoding="utf-8")) == code_blocks(en.read_text(encoding="utf-8")), zh.name


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for v in node for p in _nav_pages(v)]


def test_every_page_is_in_the_nav():
    """The site's own pages (home, getting started, tutorials, API, results) are all listed, and
    every nav entry exists. (A guide page, docs/*.md, is added to the nav by whoever writes it.)"""
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = yaml.safe_load(text[text.index("\nnav:"):])["nav"]
    listed = set(_nav_pages(nav))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if not p.name.endswith(".zh.md")}
    own = {p for p in pages if "/" in p or p in ("index.md", "getting-started.md", "results.md")}
    assert own - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


def test_site_builds_strict(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocs_static_i18n  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"the docs extra is not installed ({e}); make test installs it")
        pytest.skip(f"the docs extra is not installed ({e}): pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "tutorials/neurons/index.html", "zh/getting-started/index.html",
                 "zh/tutorials/training/index.html", "api/nn/index.html", "results/index.html"):
        assert (site / page).is_file(), page
    assert "spikeforge.nn.LIF" in (site / "api/nn/index.html").read_text(encoding="utf-8")
    results = (site / "results/index.html").read_text(encoding="utf-8")
    assert "spikeforge:include" not in results and "SpikingJelly" in results
    zh = (site / "zh/getting-started/index.html").read_text(encoding="utf-8")
    assert "快速上手" in zh and 'hreflang="en"' in zh     # the translated page, with the language switch


def test_included_file_is_adapted(tmp_path):
    """docs/results.md includes benchmarks/RESULTS.md at build time (tools/docs_hooks.py):
    headings move one level down outside code, an image is embedded, a link to a repository
    file becomes its path, and a link to a missing file stops the build."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "plot.png").write_bytes(b"\x89PNG")
    (bench / "README.md").write_text("x")
    text = "# Title\nSee [`README.md`](README.md), [web](https://a.b/c).\n```\n# comment\n```\n![p](plot.png)\n"
    out = hooks.adapt(text, bench, tmp_path)
    assert out.splitlines()[:2] == ["## Title", "See `README.md` (`benchmarks/README.md`), [web](https://a.b/c)."]
    assert "\n# comment\n" in out and "](data:image/png;base64,iVBORw==)" in out
    assert hooks.adapt("[part](README.md#part)\n", bench, tmp_path) == "part (`benchmarks/README.md`)\n"
    with pytest.raises(ValueError, match="missing.md"):
        hooks.adapt("[m](missing.md)\n", bench, tmp_path)
    with pytest.raises(ValueError, match="missing.md#part"):
        hooks.adapt("[m](missing.md#part)\n", bench, tmp_path)
