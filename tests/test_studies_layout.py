"""The studies sit outside the product: fer/ never imports them, they import each other's public names only, in one
direction (no import circles), and benchmarks/ holds speed and cost measurements, not study runners."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in a file; names are [] for `import x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def test_the_package_never_imports_studies_or_benchmarks():
    for path in sorted((REPO / "fer").rglob("*.py")):
        bad = [module for module, _ in imports(path) if module.split(".")[0] in ("studies", "benchmarks")]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: fer/ is the product, studies/ and benchmarks/ use it"


def test_studies_import_public_names_only_and_form_no_circle():
    graph = {}
    for path in sorted((REPO / "studies").glob("*.py")):
        name = f"studies.{path.stem}"
        graph[name] = set()
        for module, names in imports(path):
            if module.startswith("studies") or module.startswith("fer") or module.startswith("benchmarks"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{path.relative_to(REPO)} imports private {private} from {module}"
            if module == "studies":
                graph[name] |= {f"studies.{n}" for n in names}
            elif module.startswith("studies."):
                graph[name].add(module)
        text = path.read_text()
        for other in ("common", "ablation", "recipe", "loss_question", "matrix"):
            assert f"{other}._" not in text.replace("__", ""), \
                f"{path.relative_to(REPO)} uses a private name of {other}"

    def visit(node, stack):
        assert node not in stack, f"import circle: {' -> '.join(stack + [node])}"
        for target in graph.get(node, ()):
            visit(target, stack + [node])

    for node in graph:
        visit(node, [])
    assert "studies.common" in graph and not graph["studies.common"], \
        "studies/common.py is the shared base: it imports no study"


def test_benchmarks_hold_no_study_runner():
    names = {path.stem for path in (REPO / "benchmarks").glob("*.py")}
    runners = names & {"ablate", "recipe", "matrix"}
    assert not runners, f"study runners belong in studies/: {sorted(runners)}"
    for path in (REPO / "benchmarks").glob("*.py"):
        bad = [module for module, _ in imports(path) if module.split(".")[0] == "studies"]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_studies_are_not_installed():
    text = (REPO / "pyproject.toml").read_text()
    assert 'include = ["fer*"]' in text, "pyproject must install the fer package only"


def test_pages_show_recorded_commands_under_the_runners_current_paths():
    from studies.common import MOVED_SCRIPTS, shown_command

    assert shown_command("python benchmarks/recipe.py --seeds 0") == "python studies/recipe.py --seeds 0"
    assert shown_command("python benchmarks/ablate.py --tables 3") == "python studies/ablation.py --tables 3"
    for new in MOVED_SCRIPTS.values():
        assert (REPO / new).is_file(), f"{new}: a moved script's new path must exist"
    for page in ("docs/results.md", "docs/recipe.md"):
        text = (REPO / page).read_text()
        stale = [old for old in MOVED_SCRIPTS if old in text]
        assert not stale, f"{page} names scripts that moved: {stale}"
