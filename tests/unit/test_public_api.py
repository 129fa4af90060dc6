"""The public API: everything public is documented, and what users import is re-exported from ``mycel``.

The docstring checker reads the source (``ast``), so it sees every module, not only what is imported.
What it asks for, in every module under ``mycel/`` except the generated ``*_pb2.py`` files and
``mycel/cli/`` (the command's functions are internal; its ``--help`` is tested with the CLI):

* a module docstring;
* a docstring on every public (name not starting with ``_``) module-level class and function;
* a docstring on every public method and property of a public class (dunder methods, property
  setters/deleters and ``@overload`` stubs excepted), nested public classes included;
* for every field of a public ``@dataclass``: an attribute docstring (a string literal statement right
  after the field) or a mention of the field's name in the class docstring.

**Overrides.** A public method without a docstring passes when it overrides a method a base class
declares, and that declaration is where the documentation lives:

* a base class inside ``mycel`` (resolved through the module's imports and re-exports, followed up
  the hierarchy): the base's declaration must have a docstring or be checked here itself (a public
  method of a public class in a checked module), so a missing docstring is reported once, at the
  declaration (e.g. in ``mycel/core/abc.py`` or ``mycel/service.py``), not at every implementation;
* a base class from outside ``mycel`` (``trio.abc.HalfCloseableStream``, ``Exception``, ...) whose
  method of that name has a docstring.

Structural implementations of a ``typing.Protocol`` that do not inherit it document themselves.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import mycel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mycel"



# ---- reading the source ------------------------------------------------------------------------------


def _checked(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return not (path.name.endswith("_pb2.py") or rel.startswith("mycel/cli/"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[str]:
    """The decorators as dotted names, calls reduced to what is called (``dataclass(frozen=True)``)."""
    names = []
    for dec in node.decorator_list:
        if isinstance(dec, ast.Call):
            dec = dec.func
        names.append(ast.unparse(dec))
    return names


def _dotted(expr: ast.expr) -> str | None:
    """``a.b.C`` for a Name/Attribute chain; the generic itself for ``Base[T]``; else None."""
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return None if inner is None else f"{inner}.{expr.attr}"
    return None


@dataclass
class ClassInfo:
    module: ModuleInfo
    node: ast.ClassDef
    qualname: str
    public: bool  # the class and every class enclosing it are public
    bases: list[str]  # dotted names as written in the module
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)


@dataclass
class ModuleInfo:
    path: Path
    rel: str
    name: str
    tree: ast.Module
    checked: bool
    imports: dict[str, str] = field(default_factory=dict)  # local name -> dotted name it stands for
    classes: dict[str, ClassInfo] = field(default_factory=dict)  # qualname -> class


def _parse_module(rel: str, text: str) -> ModuleInfo:
    """Parse one module's text; ``rel`` is its path from the repository root (``mycel/...py``)."""
    path = ROOT / rel
    info = ModuleInfo(
        path=path,
        rel=rel,
        name=_module_name(path),
        tree=ast.parse(text, filename=rel),
        checked=_checked(path),
    )
    for node in ast.walk(info.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    info.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    info.imports[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module
            if node.level:  # relative import
                pkg = info.name.split(".") if path.name == "__init__.py" else info.name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, node.module])
            for alias in node.names:
                info.imports[alias.asname or alias.name] = f"{base}.{alias.name}"

    def collect(body: list[ast.stmt], prefix: str, public: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                qualname = f"{prefix}{node.name}"
                cls = ClassInfo(
                    module=info,
                    node=node,
                    qualname=qualname,
                    public=public and _is_public(node.name),
                    bases=[d for d in map(_dotted, node.bases) if d is not None],
                )
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        # the first definition of a name is the getter / the documented one
                        cls.methods.setdefault(item.name, item)
                info.classes[qualname] = cls
                collect(node.body, f"{qualname}.", cls.public)

    collect(info.tree.body, "", True)
    return info


def _read_module(path: Path) -> ModuleInfo:
    return _parse_module(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))


class Source:
    """Every module of the package, and how class names resolve across them."""

    def __init__(self) -> None:
        self.modules: dict[str, ModuleInfo] = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            if path.name.endswith("_pb2.py"):
                continue
            module = _read_module(path)
            self.modules[module.name] = module

    def resolve(self, module: ModuleInfo, dotted: str, depth: int = 0) -> ClassInfo | type | None:
        """The class ``dotted`` names in ``module``: a mycel ClassInfo, an outside class, or None."""
        if depth > 20:
            return None
        head, _, rest = dotted.partition(".")
        if not rest and head in module.classes:
            return module.classes[head]
        target = module.imports.get(head, head if rest else None)
        if target is None:
            return None
        full = f"{target}.{rest}" if rest else target
        return self.resolve_full(full, depth + 1)

    def resolve_full(self, full: str, depth: int = 0) -> ClassInfo | type | None:
        parts = full.split(".")
        if parts[0] == "mycel":
            for i in range(len(parts) - 1, 0, -1):
                module = self.modules.get(".".join(parts[:i]))
                if module is not None:
                    return self.resolve(module, ".".join(parts[i:]), depth + 1)
            return None
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            return obj if isinstance(obj, type) else None
        import builtins

        obj = getattr(builtins, full, None)
        return obj if isinstance(obj, type) else None

    def override_documented(self, cls: ClassInfo, name: str) -> bool:
        """True if a base class of ``cls`` declares ``name`` where its documentation lives (see above).

        Each line of bases is followed up to the first class that declares ``name``."""
        seen: set[int] = set()
        todo: list[ClassInfo | type] = [b for b in (self.resolve(cls.module, d) for d in cls.bases) if b is not None]
        while todo:
            base_cls = todo.pop()
            if id(base_cls) in seen:
                continue
            seen.add(id(base_cls))
            if isinstance(base_cls, type):  # outside mycel: ask the class at runtime
                for klass in base_cls.__mro__:
                    member = klass.__dict__.get(name)
                    if member is None:
                        continue
                    if isinstance(member, (property, classmethod, staticmethod)) or inspect.isroutine(member):
                        if inspect.getdoc(member):
                            return True
                    break
                continue
            method = base_cls.methods.get(name)
            if method is not None:
                if (base_cls.module.checked and base_cls.public) or ast.get_docstring(method) is not None:
                    return True
                continue
            todo += [b for b in (self.resolve(base_cls.module, d) for d in base_cls.bases) if b is not None]
        return False


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any(name in ("dataclass", "dataclasses.dataclass") for name in _decorator_names(node))


def _dataclass_fields(node: ast.ClassDef) -> list[tuple[ast.AnnAssign, ast.stmt | None]]:
    """(field, the statement after it) for every dataclass field (ClassVar annotations are not fields)."""
    fields = []
    for i, stmt in enumerate(node.body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(stmt.annotation):
            continue
        nxt = node.body[i + 1] if i + 1 < len(node.body) else None
        fields.append((stmt, nxt))
    return fields


def _is_string_statement(stmt: ast.stmt | None) -> bool:
    return (
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
    )


def find_offenders(source: Source) -> list[tuple[str, int, str]]:
    """(file, line, qualified name) of everything public that lacks its documentation."""
    offenders: list[tuple[str, int, str]] = []
    for module in source.modules.values():
        if not module.checked:
            continue
        if ast.get_docstring(module.tree) is None:
            offenders.append((module.rel, 1, "<module docstring>"))
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
                if ast.get_docstring(node) is None and "overload" not in _decorator_names(node):
                    offenders.append((module.rel, node.lineno, node.name))
        for cls in module.classes.values():
            if not cls.public:
                continue
            class_doc = ast.get_docstring(cls.node)
            if class_doc is None:
                offenders.append((module.rel, cls.node.lineno, cls.qualname))
            for item in cls.node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _is_public(item.name):
                    continue
                decorators = _decorator_names(item)
                if any(d.endswith((".setter", ".deleter")) or d in ("overload", "typing.overload") for d in decorators):
                    continue
                if ast.get_docstring(item) is not None or source.override_documented(cls, item.name):
                    continue
                offenders.append((module.rel, item.lineno, f"{cls.qualname}.{item.name}"))
            if _is_dataclass(cls.node):
                for stmt, nxt in _dataclass_fields(cls.node):
                    assert isinstance(stmt.target, ast.Name)
                    name = stmt.target.id
                    if not _is_public(name) or _is_string_statement(nxt):
                        continue
                    if class_doc is not None and re.search(rf"\b{re.escape(name)}\b", class_doc):
                        continue
                    offenders.append((module.rel, stmt.lineno, f"{cls.qualname}.{name} (field)"))
    return sorted(offenders)


# ---- the tests ---------------------------------------------------------------------------------------


def test_every_public_name_is_documented() -> None:
    offenders = [
        (rel, line, name) for rel, line, name in find_offenders(Source())
    ]
    if offenders:
        listing = "\n".join(f"  {rel}:{line} {name}" for rel, line, name in offenders)
        pytest.fail(f"{len(offenders)} public names without documentation:\n{listing}", pytrace=False)


PROBE = '''"""A module the checker test makes up."""
from dataclasses import dataclass
from mycel.core.abc import Connection
from trio.abc import Stream

def f(): pass

@dataclass
class D:
    """Has x."""
    x: int = 0
    y: int = 0
    z: int = 0
    """Documented."""

class C(Connection):
    """C: run and aclose are Connection's, documented there; extra is its own."""
    async def run(self): pass
    async def aclose(self): pass
    def extra(self): pass
    def _private(self): pass
    def __repr__(self): return ""

class S(Stream):
    """send_all is documented by trio."""
    async def send_all(self, data): pass

class _Hidden:
    def public_of_private(self): pass
'''


def test_the_checker_finds_what_is_missing() -> None:
    """The checker itself, on a made-up module: an undocumented function, field and method are found;
    overrides of documented base-class methods (in mycel or outside it) and private names are not."""
    source = Source()
    probe = _parse_module("mycel/core/_checker_probe.py", PROBE)
    source.modules[probe.name] = probe
    found = {name for rel, _, name in find_offenders(source) if rel == probe.rel}
    assert found == {"f", "D.y (field)", "C.extra"}


def test_top_level_exposes_all() -> None:
    missing = [name for name in mycel.__all__ if not hasattr(mycel, name)]
    assert not missing, f"in mycel.__all__ but not importable from mycel: {missing}"
    assert len(set(mycel.__all__)) == len(mycel.__all__), "mycel.__all__ has duplicates"


def test_subpackages_expose_their_all() -> None:
    problems = []
    with_all = set()
    for info in pkgutil.walk_packages(mycel.__path__, "mycel."):
        if not info.ispkg or info.name.startswith("mycel.cli"):
            continue
        package = importlib.import_module(info.name)
        names = getattr(package, "__all__", None)
        if names is None:
            continue
        with_all.add(info.name)
        problems += [f"{info.name}.{name}" for name in names if not hasattr(package, name)]
    assert not problems, f"in a subpackage's __all__ but missing: {problems}"
    assert {"mycel.transports", "mycel.security", "mycel.muxers", "mycel.protocols", "mycel.network"} <= with_all


def test_subpackage_exports_are_also_top_level() -> None:
    """What the layer subpackages re-export is importable from ``mycel`` too."""
    missing = []
    for name in ("transports", "security", "muxers", "protocols", "network"):
        package = importlib.import_module(f"mycel.{name}")
        missing += [f"mycel.{name}.{n}" for n in package.__all__ if getattr(mycel, n, None) is not getattr(package, n)]
    assert not missing, f"re-exported by a subpackage but not the same object in mycel: {missing}"


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no ```python block"
    return match.group(1)


def test_readme_example_imports_only_from_mycel() -> None:
    tree = ast.parse(_readme_example())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mycel":
            if node.module != "mycel":
                bad.append(ast.unparse(node))
            else:
                bad += [f"{alias.name} (not in mycel.__all__)" for alias in node.names if alias.name not in mycel.__all__]
        elif isinstance(node, ast.Import):
            bad += [ast.unparse(node) for alias in node.names if alias.name.split(".")[0] == "mycel"]
    assert not bad, f"the README example should import from the top-level mycel package only: {bad}"


def test_readme_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_example(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "listening on /ip4/127.0.0.1/tcp/" in done.stdout
    assert (tmp_path / "node.key").exists()


def _own_doc(obj: object) -> str | None:
    """The object's own docstring: None for a class that has none (not its base's, not the
    signature ``@dataclass`` fills in)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if doc and hasattr(obj, "__dataclass_fields__") and doc.startswith(f"{obj.__name__}("):
            return None
        return doc if isinstance(doc, str) and doc.strip() else None
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def test_every_exported_class_and_function_has_a_docstring() -> None:
    undocumented = []
    for name in mycel.__all__:
        obj = getattr(mycel, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # constants (__version__) and type aliases
        if _own_doc(obj) is None:
            undocumented.append(name)
    assert not undocumented, f"exported from mycel without a docstring: {undocumented}"


async def test_readme_service_example_greets_a_peer_that_serves_echo() -> None:
    """The README's service snippet, run as written between two in-memory hosts."""
    import trio

    from mycel.testing.hosts import memory_hosts

    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)
    snippet = next(b for b in blocks if "class Greeter(Service)" in b)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    greeter = namespace["Greeter"]
    heard = trio.Event()
    got = bytearray()

    async def echo(stream: mycel.MuxedStream) -> None:
        async for chunk in stream:
            got.extend(chunk)
        heard.set()

    async with memory_hosts(2, services=lambda: [mycel.Identify(), greeter()]) as (a, b):
        b.set_stream_handler("/my-app/echo/1.0.0", echo)
        await a.connect(b.addrs[0])
        with trio.fail_after(10):
            await heard.wait()
    assert bytes(got) == b"hello"


def test_readme_pubsub_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)
    snippet = next(b for b in blocks if "news_b.publish" in b)
    script = tmp_path / "pubsub_example.py"
    script.write_text(snippet, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'hello' True 1 1"
