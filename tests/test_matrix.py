"""The cross-dataset matrix (studies/matrix.py): the committed records cover every shipped model and test set, match
the shipped files, reproduce on real data, and the generated sections (docs/models-and-matrix.md, the README's table of
shipped models) are rebuilt exactly from them."""

import pytest

from fer.checkpoint import WEIGHTS_DIR, shipped_models
from fer.data.paths import data_root
from fer.evaluate import sha256_file
from studies import matrix


def test_docs_matrix_section_is_rebuilt_exactly_from_the_committed_records():
    expected = matrix.markdown(*matrix.collect(matrix.RECORDS))
    assert matrix.section(matrix.PAGE.read_text()) == expected, \
        "docs/models-and-matrix.md matrix section is stale: python studies/matrix.py --table-only"


def test_readme_models_table_is_rebuilt_exactly_from_the_committed_records():
    expected = matrix.headline(*matrix.collect(matrix.RECORDS))
    assert matrix.section(matrix.README.read_text(), matrix.MODELS_START, matrix.MODELS_END) == expected, \
        "README shipped-models table is stale: python studies/matrix.py --table-only"
    for model in shipped_models():
        assert f"| `{model}` |" in expected, f"{model}: shipped but not in the README table"


def test_records_cover_every_shipped_model_and_match_its_file():
    cells, cards = matrix.collect(matrix.RECORDS)
    for model in shipped_models():
        sha = sha256_file(WEIGHTS_DIR / f"{model}.pt")
        mine = {(r["column"], r["tta"]): r for r in cells if r["model"] == model}
        assert set(mine) == {(c, t) for c in matrix.COLUMNS for t in matrix.TTAS}, f"{model}: missing cells"
        assert all(r["checkpoint_sha256"] == sha for r in mine.values()), f"{model}: records of another file; rerun"
        card = next(c for c in cards if c["model"] == model)
        assert card["sha256"] == sha and card["file_bytes"] == (WEIGHTS_DIR / f"{model}.pt").stat().st_size


def test_cell_options_follow_the_checkpoint():
    seven = {"class_names": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"], "config": {}}
    assert matrix.cell_options(seven, "ferplus") == {"exclude_classes": ("contempt",), "detect_faces": False}
    eight = {"class_names": seven["class_names"] + ["contempt"], "config": {}}
    assert matrix.cell_options(eight, "ferplus")["exclude_classes"] == ()
    realigned = {**seven, "config": {"data": {"dataset": "mixed", "sources": ["ferplus", "rafdb"], "realign": ["rafdb"]}}}
    assert matrix.cell_options(realigned, "rafdb")["detect_faces"] and not matrix.cell_options(realigned, "ferplus")["detect_faces"]


@pytest.mark.skipif(not (data_root() / "rafdb" / "Image").is_dir(), reason="RAF-DB not found")
def test_a_committed_cell_reproduces_on_real_data():
    record = matrix.evaluate_cell("fer2013", "rafdb_val", "none")
    committed = next(r for r in matrix.collect(matrix.RECORDS)[0]
                     if (r["model"], r["column"], r["tta"]) == ("fer2013", "rafdb_val", "none"))
    assert record.keys() == committed.keys()
    metrics = ("accuracy", "macro_f1", "balanced_accuracy")
    assert {k: v for k, v in record.items() if k not in metrics} == {k: v for k, v in committed.items() if k not in metrics}
    for key in metrics:  # another CPU may flip an argmax or two on borderline faces
        assert abs(record[key] - committed[key]) <= 0.01, (key, record[key], committed[key])


def test_keep_timing_refuses_a_missing_card_or_one_of_another_model_before_evaluating(tmp_path):
    import shutil
    import subprocess
    import sys

    for model in ("fer2013", "ferplus"):  # different architectures: medium and small ResNet
        (tmp_path / model).mkdir()
    shutil.copy(matrix.RECORDS / "fer2013" / "card.json", tmp_path / "fer2013" / "card.json")
    assert matrix.timing_problems(tmp_path, ["fer2013"]) == []
    assert matrix.timing_problems(tmp_path, ["ferplus"]) == [f"{tmp_path / 'ferplus' / 'card.json'}: no card to keep "
                                                             "the speed of"]
    shutil.copy(matrix.RECORDS / "fer2013" / "card.json", tmp_path / "ferplus" / "card.json")
    assert matrix.timing_problems(tmp_path, ["ferplus"]) == [f"{tmp_path / 'ferplus' / 'card.json'}: timed another "
                                                             "model than ferplus is now"]
    (tmp_path / "ferplus" / "card.json").unlink()
    done = subprocess.run([sys.executable, str(matrix.PAGE.parents[1] / "studies" / "matrix.py"), "--keep-timing",
                           "--root", str(tmp_path), "--models", "fer2013", "ferplus"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no card to keep the speed of" in done.stderr, done.stderr
    assert [*tmp_path.rglob("*.json")] == [tmp_path / "fer2013" / "card.json"], "no cell was evaluated"
