"""The README stays short and is a map: every page it names exists, every docs page is in its map, and its Python
quick start runs as written on a real photo."""

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference material to docs/ (at most 200)"


def test_every_page_the_readme_names_exists_and_every_docs_page_is_in_its_map():
    text = README.read_text()
    named = set(re.findall(r"`((?:docs/[\w./-]+\.md)|CHANGELOG\.md|data/README\.md)`", text))
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert not missing, f"README names pages that do not exist: {missing}"
    pages = {path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")}
    unmapped = sorted(pages - named)
    assert not unmapped, f"docs pages a newcomer cannot find from the README: {unmapped}"


def test_readme_python_quick_start_runs_on_a_real_photo(shared, tmp_path, monkeypatch):
    text = README.read_text()
    start, end = text.index("<!-- api:start -->"), text.index("<!-- api:end -->")
    snippet = text[start:end].split("```python\n", 1)[1].rsplit("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 3, "the README's Python quick start is three lines"
    shutil.copy(shared / "media" / "expression_angry_man.jpg", tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_api"}
    exec(compile(snippet, "README.md Python quick start", "exec"), namespace)
    faces = namespace["faces"]
    assert len(faces) == 1, faces  # shared/media/README.md: one face, an angry man
    assert faces[0]["label"] == "angry" and set(faces[0]) >= {"box", "label", "probabilities"}, faces[0]
