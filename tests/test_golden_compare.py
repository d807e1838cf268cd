"""scripts/golden.py compare: equal records are identical, NaN metrics included."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


def _record(d: Path, rows: list[dict]) -> Path:
    d.mkdir()
    (d / "machine.json").write_text(json.dumps({"cpu": "x"}))
    (d / "r.json").write_text(json.dumps({"rows": rows, "weights_sha256": "ab"}))
    return d


def test_nan_equals_nan_and_a_changed_number_is_a_difference(tmp_path, capsys):
    # a step without data logs entropy NaN on both sides (json writes NaN)
    rows = [{"loss": 0.5, "entropy": float("nan")}]
    a = _record(tmp_path / "a", rows)
    assert golden.compare(a, _record(tmp_path / "b", rows)) == 0
    assert "1 of 1 reproductions identical" in capsys.readouterr().out
    c = _record(tmp_path / "c", [{"loss": 0.25, "entropy": float("nan")}])
    assert golden.compare(a, c) == 1
    assert "r: step 0: loss 0.5 -> 0.25" in capsys.readouterr().out
