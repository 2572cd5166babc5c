#!/usr/bin/env python3
"""Fails when a module of `statewright-core` imports from a layer above its own.

The layers of `core/src`, from the bottom: model -> data -> access -> persist. A file under
`core/src/<layer>/` may name `crate::<other>` only when <other> is its own layer or one below
it. Root re-exports (`crate::Error`, `crate::StateBackend`, ...) hide the layer, so layer code
must not use them; `crate::__private` and `$crate` (macro output) are exempt.
"""

import pathlib
import re
import sys

LAYERS = ["model", "data", "access", "persist"]
ROOT = pathlib.Path(__file__).resolve().parent.parent / "core" / "src"
# `crate::x` in code, not in comments (doc links may point anywhere: they import nothing).
PATH = re.compile(r"(?<!\$)\bcrate::([A-Za-z_][A-Za-z0-9_]*)")


def code_lines(text):
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        yield number, line


def main():
    problems = []
    for layer_index, layer in enumerate(LAYERS):
        for path in sorted((ROOT / layer).rglob("*.rs")):
            for number, line in code_lines(path.read_text()):
                for match in PATH.finditer(line):
                    target = match.group(1)
                    if target.startswith("__"):
                        continue
                    where = f"{path.relative_to(ROOT.parent.parent)}:{number}"
                    if target not in LAYERS:
                        problems.append(
                            f"{where}: `crate::{target}` names a root re-export; "
                            f"import it from its layer"
                        )
                    elif LAYERS.index(target) > layer_index:
                        problems.append(
                            f"{where}: the {layer} layer imports from the {target} layer above it"
                        )
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} import(s) point up a layer (order: {' -> '.join(LAYERS)})")
        return 1
    print(f"core layers point down ({' -> '.join(LAYERS)})")
    return facade_one_path()


def facade_one_path():
    """Every item of the facade (`src/lib.rs`) is re-exported at one path: the top level or one
    module (the prelude, a second path by convention, aside)."""
    text = (ROOT.parent.parent / "src" / "lib.rs").read_text()
    text = "\n".join(line for _, line in code_lines(text))
    where = {}
    problems = []

    def names(block):
        for part in re.sub(r"\s+", " ", block).split(","):
            name = part.strip().split(" as ")[-1].strip()
            if name and name != "self":
                yield name

    def add(scope, name):
        # Two modules may hold different items of one name (each facade module re-exports the
        # core module of its name); the top level and a module may not.
        if name in where and where[name] != scope and "statewright" in (scope, where[name]):
            problems.append(f"`{name}` is at `{where[name]}` and at `{scope}`")
        where.setdefault(name, scope)

    for module in re.finditer(r"pub mod (\w+) \{(.*?)\n\}", text, re.S):
        if module.group(1) != "prelude":
            for block in re.findall(r"pub use [\w:]+::\{([^}]*)\}", module.group(2)):
                for name in names(block):
                    add(f"statewright::{module.group(1)}", name)
            for single in re.findall(r"pub use [\w:]+::(\w+);", module.group(2)):
                add(f"statewright::{module.group(1)}", single)
    top = re.sub(r"pub mod \w+ \{.*?\n\}", "", text, flags=re.S)
    for block in re.findall(r"^pub use [\w:]+::\{([^}]*)\}", top, re.M):
        for name in names(block):
            add("statewright", name)
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} item(s) of the facade are at more than one path")
        return 1
    print(f"every facade item is at one path ({len(where)} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
