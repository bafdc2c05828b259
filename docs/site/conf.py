"""Sphinx configuration of the torchbloop documentation site (``make docs``).

Why Sphinx: the library's docstrings are Google style with reST roles (``:class:``, ``:func:``)
and ``.. math::`` blocks, which autodoc + napoleon render as written; MyST lets the site reuse
the Markdown the project already keeps (CHANGELOG, docs/results, docs/benchmarks.md,
docs/production.md) without copies in git; sphinx-gallery executes every recipe during the
build and fails it on the first error. See ``docs/site/README.md``.

Content that lives elsewhere in the repository is copied into ``generated/`` (git-ignored) at
the start of every build, so the site always shows the committed version of it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import shutil
from pathlib import Path

import torchbloop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GENERATED = HERE / "generated"

project = "torchbloop"
author = "torchbloop developers"
copyright = "torchbloop developers, BSD-3-Clause"
release = torchbloop.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["README.md", "_build", "**/GALLERY_HEADER.rst", "generated/**/*.json"]

# Strict: `make docs` passes -W --keep-going -n, so every warning fails the build. References
# to other projects' objects (torch, numpy, typing) cannot resolve offline (no intersphinx
# inventories can be fetched at build time); they are the ONLY references let through.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|dist|nn|numpy|np|typing|typing_extensions|collections|abc|contextlib|pathlib)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Tensor|Module|Parameter|ProcessGroup|DTensor|DeviceMesh|GradScaler|dtype|device)",
    ),
    (r"py:.*", r"(Callable|Sequence|Iterable|Iterator|Mapping|MutableMapping|Any|Literal|Self)"),
    (r"py:.*", r"(NamedTuple|Protocol|TypeAlias|Enum|Path|AbstractContextManager|Stateful)"),
    (r"py:.*", r"(optional|default|float|int|bool|str|None|tuple|list|dict|object|type)"),
]
# Docstring problems in the library, reported to its owners instead of edited here (the docs
# engineer does not own library files). Each entry: (role, target) and why it does not resolve.
KNOWN_DOCSTRING_ISSUES = [
    ("py:class", "ParamsT"),  # private type alias in public signatures (torchbloop._validation)
    ("py:class", "EmaOrder"),  # private type alias in Bloop's signature (surgeons/bloop.py)
    ("py:class", "NonFinite"),  # private type alias in the surgeons' signatures (surgeons/_base.py)
    (
        "py:class",
        "Bool",
    ),  # GradVac's ``adjusted`` docstrings begin "Bool: ..." (functional/gradvac.py)
]
nitpick_ignore = list(KNOWN_DOCSTRING_ISSUES)

# ---- Markdown (MyST) -----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# ---- API reference ---------------------------------------------------------------------------
autosummary_generate = False  # the module pages are generated below (_api), from __all__
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# ---- Executed examples -----------------------------------------------------------------------
# Doctest blocks of the site's own pages (``{doctest}``) run under `sphinx-build -b doctest`;
# the library's docstring examples already run under pytest (--doctest-modules).
doctest_test_doctest_blocks = ""
doctest_global_setup = "import torch\nimport torchbloop"

sphinx_gallery_conf = {
    "examples_dirs": ["recipes", "figures"],
    "gallery_dirs": ["generated/recipes", "generated/figures"],
    "filename_pattern": r".*\.py$",  # execute every example, not only plot_*
    "abort_on_example_error": True,  # a failing example fails the build
    "only_warn_on_example_error": False,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 0,
    "show_memory": False,
    "write_computation_times": False,  # those pages load DataTables from a CDN
    "reference_url": {"torchbloop": None},
    "capture_repr": (),
    "copyfile_regex": "",
}

# ---- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"torchbloop {release}"
html_static_path = ["_static", str(GENERATED / "_static")]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "source_directory": "docs/site/",
    "navigation_with_keys": True,
}

# Math renders offline: MathJax 3 from the django-static-mathjax wheel (PyPI, no dependencies),
# served from the built site. Only the files the TeX + CHTML component loads are copied.
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}"}}}


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MathJax not found: install the docs extra (pip install -e '.[docs]')")
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax files not found in {es5}")
    return es5


def _copy_mathjax(dest: Path) -> None:
    es5 = _mathjax_dir()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", dest / "tex-chtml.js")
    for sub in ("output/chtml/fonts/woff-v2", "input/tex/extensions"):
        shutil.copytree(es5 / sub, dest / sub, dirs_exist_ok=True)


# ---- Content copied from the rest of the repository -------------------------------------------


def _copy_tree(src: Path, dest: Path) -> None:
    """Copies a results tree without the raw run records (JSON, read by the reports only)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("runs", "*.json"))


def _section(markdown: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown text ('' when absent)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    return match.group(1).strip() if match else ""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
        path.write_text(text)


def _results() -> None:
    _copy_tree(ROOT / "docs" / "results", GENERATED / "results")
    reports = sorted(p.parent.name for p in (GENERATED / "results").glob("*/report.md"))
    lines = [
        "# Experiments",
        "",
        "The paper's experiments at CPU scale on real data, as committed in `docs/results/` of",
        "the repository: the index, then one report per experiment (figures, key values, and the",
        "notes on what the runs do and do not show).",
        "Reproduce any of them with `torchbloop run NAME --budget default --out OUT` and",
        "`torchbloop report OUT`.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        "results/README",
    ]
    lines += [f"results/{name}/report" for name in reports]
    lines += ["```", ""]
    results = GENERATED / "results"
    listed = {"README.md", *(f"{n}/report.md" for n in reports)}
    others = sorted(
        str(p.relative_to(results).with_suffix(""))
        for p in results.rglob("*.md")
        if str(p.relative_to(results)) not in listed
    )
    # Other pages (notes, a scoreboard, a study's extra pages) are reached from their report's
    # links; the hidden toctree gives each a place in the site.
    lines += ["```{toctree}", ":hidden:", ""] + [f"results/{o}" for o in others] + ["```", ""]
    _write(GENERATED / "experiments.md", "\n".join(lines))


def _single_files() -> None:
    for name in ("benchmarks.md", "production.md"):
        shutil.copy2(ROOT / "docs" / name, GENERATED / name)
    for png in (ROOT / "docs").glob("benchmarks*.png"):
        shutil.copy2(png, GENERATED / png.name)
    shutil.copy2(ROOT / "CHANGELOG.md", GENERATED / "CHANGELOG.md")
    architecture = ROOT / "docs" / "architecture.md"
    if architecture.is_file():
        shutil.copy2(architecture, GENERATED / "architecture.md")
    else:  # until docs/architecture.md exists: the README's repository map (its code block)
        readme = (ROOT / "README.md").read_text()
        block = re.search(r"```\n.*?```", _section(readme, "Repository map"), re.S)
        text = "# Layout\n\n" + (block.group(0) if block else "") + "\n"
        _write(GENERATED / "architecture.md", text)


# ---- API reference ---------------------------------------------------------------------------
# Main modules get a page with every name of their __all__; every other public module (no
# leading underscore anywhere in its name, outside the experiment suite) gets a page with its
# docstring and links to where its names are documented. Both lists are found by walking the
# package, so a new module or a new name in an __all__ appears without a page edit.
API_MAIN = [
    "torchbloop",
    "torchbloop.functional",
    "torchbloop.compile",
    "torchbloop.amp",
    "torchbloop.distributed",
    "torchbloop.distributed.checkpoint",
    "torchbloop.methods",  # the method table (issue 9), once it exists
]
API_EXCLUDE = ("torchbloop.experiments",)

DOCUMENTED: dict[int, str] = {}
"""id(object) -> the name under which the API reference documents it (filled below)."""


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(torchbloop.__path__, "torchbloop."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or info.name.startswith(API_EXCLUDE):
            continue
        names.append(info.name)
    return names


def _exports(module: object, main: bool = True) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    if main:
        raise RuntimeError(f"{module.__name__} has no __all__: its public names are unknown")
    # A submodule without __all__: the public classes and functions it defines.
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and getattr(v, "__module__", None) == module.__name__
        and _kind(v) in ("class", "exception", "function")
    ]


def _plain(obj: object) -> bool:
    return isinstance(obj, (str, int, float, bool, tuple)) and not hasattr(obj, "_fields")


def _alias(obj: object) -> str:
    return repr(obj).replace("torch.Tensor", "Tensor").replace("collections.abc.", "")


def _docstring(module: object, name: str) -> list[str]:
    """The docstring of ``module.name``: its own, or the attribute docstring where it is set."""
    import inspect

    from sphinx.pycode import ModuleAnalyzer

    obj = getattr(module, name)
    if _kind(obj) in ("class", "exception", "function", "module"):
        return (inspect.getdoc(obj) or "").splitlines()
    for info in [module.__name__, *_all_modules()]:
        candidate = importlib.import_module(info)
        if getattr(candidate, name, None) is not obj:
            continue
        docs = ModuleAnalyzer.for_module(info).find_attr_docs().get(("", name))
        if docs:
            return [line.rstrip() for line in docs]
    return []


def _all_modules() -> list[str]:
    """Every module of the library, private ones included (where aliases are defined)."""
    names = []
    for info in pkgutil.walk_packages(torchbloop.__path__, "torchbloop."):
        if not info.name.startswith(API_EXCLUDE):
            names.append(info.name)
    return names


def _first_sentence(lines: list[str]) -> str:
    """The summary of a docstring, its cross-references as code (the table has no context)."""
    paragraph = []
    for line in lines:
        if not line.strip():
            break
        paragraph.append(line.strip())
    text = " ".join(paragraph)
    match = re.match(r"(.+?\.)(\s|$)", text)
    text = match.group(1) if match else text
    return re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"``\1``", text)


def _kind(obj: object) -> str:
    import inspect

    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "data"


def _module_page(name: str, main: bool) -> str:
    module = importlib.import_module(name)
    title = f"``{name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", ""]
    lines += [f".. currentmodule:: {name}", ""]
    exports = _exports(module, main)
    if not main:
        linked = [e for e in exports if DOCUMENTED.get(id(getattr(module, e)))]
        if linked:
            lines += [".. rubric:: Documented elsewhere", ""]
        for export in linked:
            obj = getattr(module, export)
            role = {"module": "mod", "function": "func", "exception": "exc", "class": "class"}
            lines.append(f"- :{role.get(_kind(obj), 'obj')}:`{export} <{DOCUMENTED[id(obj)]}>`")
        lines.append("")
        exports = [e for e in exports if e not in linked]  # documented on this page
    entries = [e for e in exports if _kind(getattr(module, e)) != "module"]
    submodules = [e for e in exports if _kind(getattr(module, e)) == "module"]
    if entries:
        lines += [".. rubric:: Summary", "", ".. list-table::", "   :widths: 30 70", ""]
        for export in entries:
            summary = _first_sentence(_docstring(module, export))
            lines += [f"   * - :obj:`{export}`", f"     - {summary}"]
        lines.append("")
    if submodules:
        lines += [".. rubric:: Subpackages", ""]
        lines += [f"- :mod:`{getattr(module, e).__name__}`" for e in submodules]
        lines.append("")
    for export in entries:
        obj = getattr(module, export)
        kind = _kind(obj)
        alias_of = DOCUMENTED.get(id(obj))
        if kind == "function" and getattr(obj, "__name__", export) != export and alias_of:
            lines += [
                f".. autodata:: {export}",
                "   :no-value:",
                "",
                f"   Alias of :func:`{alias_of}`.",
                "",
            ]
        elif kind == "class":
            lines += [f".. autoclass:: {export}", "   :members:", "   :show-inheritance:", ""]
        elif kind == "exception":
            lines += [f".. autoexception:: {export}", "   :show-inheritance:", ""]
        elif kind == "function":
            lines += [f".. autofunction:: {export}", ""]
        else:  # a constant or a type alias: its docstring is where it is defined
            lines += [f".. py:data:: {export}", ""]
            lines += [f"   {line}" if line else "" for line in _docstring(module, export)]
            lines += [
                "",
                f"   Value: ``{obj!r}``" if _plain(obj) else f"   Alias of ``{_alias(obj)}``.",
                "",
            ]
    return "\n".join(lines) + "\n"


def _api() -> None:
    importlib.invalidate_caches()
    main = [m for m in API_MAIN if importlib.util.find_spec(m) is not None]
    others = [m for m in _public_modules() if m not in main]
    DOCUMENTED.clear()
    for name in main:  # the name an object is documented under: its first main module
        module = importlib.import_module(name)
        for export in _exports(module):
            obj = getattr(module, export)
            is_alias = _kind(obj) == "function" and getattr(obj, "__name__", export) != export
            if not is_alias:
                DOCUMENTED.setdefault(id(obj), f"{name}.{export}")
    for name in main + others:
        DOCUMENTED.setdefault(id(importlib.import_module(name)), name)
    out = GENERATED / "api"
    if out.exists():
        shutil.rmtree(out)
    for name in main:
        _write(out / f"{name}.rst", _module_page(name, main=True))
    for name in others:
        _write(out / f"{name}.rst", _module_page(name, main=False))
    lines = [
        "API reference",
        "=============",
        "",
        "Every public name of the library, generated from the docstrings at each build: a",
        "module's ``__all__`` is its public API, so a name added there appears here without a",
        "page edit.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    lines += [f"   api/{name}" for name in main]
    lines += ["", "Modules whose names are documented above (their docstrings, and links):", ""]
    lines += [".. toctree::", "   :maxdepth: 1", ""] + [f"   api/{name}" for name in others]
    _write(GENERATED / "api.rst", "\n".join(lines) + "\n")


# Methods: one hand-written page per method in methods/<name>.md; a method of the method table
# (torchbloop.methods.METHODS, when it exists) without one gets a generated page from its entry.


def _method_table() -> dict[str, object]:
    try:
        module = importlib.import_module("torchbloop.methods")
    except ImportError:
        return {}
    return dict(module.METHODS)


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if not text or text.endswith(".") else ".")


def _methods() -> None:
    out = GENERATED / "methods"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = {p.stem for p in (HERE / "methods").glob("*.md")} - {"index"}
    generated = []
    for name, info in _method_table().items():
        if name in written:
            continue
        factory = getattr(info, "factory", None)
        target = f"{factory.__module__}.{factory.__qualname__}" if factory else ""
        public = f"torchbloop.{getattr(factory, '__name__', '')}"
        if factory is not None and getattr(torchbloop, factory.__name__, None) is factory:
            target = public
        hyper = ", ".join(f"`{h}`" for h in getattr(info, "hyperparameters", ()))
        max_aux = getattr(info, "max_aux", 1)
        text = "\n".join(
            [
                f"# {getattr(info, 'label', name)}",
                "",
                _sentence(getattr(info, "description", "")) or "(no description in the table)",
                "",
                f"- name in the experiments and the method table: `{name}`",
                f"- hyperparameters a sweep may set: {hyper or 'none'}",
                f"- auxiliary losses: {'any number K' if max_aux is None else max_aux}",
                f"- class: {{py:class}}`{target}`" if target else "",
                "",
                "This page is generated from the method table; the formula, its property and the",
                "citation are in the class docstring linked above.",
                "",
            ]
        )
        _write(out / f"{name}.md", text)
        generated.append(name)
    toc = ["```{toctree}", ":maxdepth: 1", ""] + [f"/generated/methods/{n}" for n in generated]
    _write(GENERATED / "methods_toc.md", "\n".join([*toc, "```", ""]) if generated else "")


def _generate() -> None:
    GENERATED.mkdir(exist_ok=True)
    _copy_mathjax(GENERATED / "_static" / "mathjax")
    _results()
    _single_files()
    _api()
    _methods()


_generate()


# ---- Cross-references written without their module -------------------------------------------
# Docstrings name objects the way their own module sees them (``:func:`bloop_update_```,
# ``:meth:`Surgeon.load_state_dict```). When Sphinx cannot resolve such a reference from the page
# it is rendered on, look in the current class and its bases first, then for the ONE documented
# object whose full name ends with it. References to private objects (a name component with a
# leading underscore: ``_direction``, ``torchbloop.functional._native.gram``) are internals the
# site does not document: they are shown as code, without a link. Anything else that does not
# resolve (unknown or ambiguous) still fails the build.


def _is_private(target: str) -> bool:
    return any(p.startswith("_") and not p.endswith("__") for p in target.split("."))


def _resolve_short_reference(app, env, node, contnode):  # type: ignore[no-untyped-def]
    import inspect

    from sphinx.util.nodes import make_refnode

    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if _is_private(target):
        return contnode
    objects = {k: v for k, v in env.get_domain("py").objects.items() if not v.aliased}
    candidates: list[str] = []
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        try:
            obj = importlib.import_module(module)
            for part in cls.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            obj = None
        if inspect.isclass(obj):
            for base in obj.__mro__:
                documented = DOCUMENTED.get(id(base))
                if documented and f"{documented}.{target}" in objects:
                    candidates = [f"{documented}.{target}"]
                    break
    if not candidates:
        candidates = [name for name in objects if name.endswith("." + target)]
    if len(candidates) != 1:
        return None
    entry = objects[candidates[0]]
    return make_refnode(
        app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, candidates[0]
    )


# Napoleon reads the first line of an attribute's or a property's docstring as ``type:
# description``. When what it took for a type is words ("True when the projection was
# skipped: ...", "Scalars (first dimension: the block)"), it was a sentence: put it back.
_WORDS = re.compile(r"[A-Za-z]\s+[A-Za-z]")


def _attribute_sentences(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    if what not in ("attribute", "property", "data"):
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: ") and _WORDS.search(line[len(":type: ") :]):
            sentence = line[len(":type: ") :]
            del lines[i]
            if i > 0 and not lines[i - 1].strip():
                del lines[i - 1]
            lines[0] = f"{sentence}: {lines[0]}" if lines else sentence
            return


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_short_reference)
    app.connect("autodoc-process-docstring", _attribute_sentences, priority=600)  # after napoleon
