"""The default job (python -m acdc_wsss.demo) and the preprocessing benchmark, end to end on small data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from acdc_wsss.demo import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_on_phantom_writes_summary_datalist_preview(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["--phantom_dir", str(tmp_path / "ph"), "--patients", "5", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert summary["patients"] == {"training": 3, "validation": 1, "testing": 1}
    assert summary["volumes"] == 10 and summary["slice_shape"] == [1, 128, 128]
    assert set(summary["tag_frequency"]) == {"RV", "Myo", "LV"}
    assert 0 < summary["slices_with_all_tags"] < 1
    assert (out / "preview.png").stat().st_size > 10_000 and (out / "datalist.json").is_file()
    assert len(list((out / "cache").glob("*.pt"))) == 10
    assert "5 patients" in printed and "preview" in printed


def test_demo_refuses_output_inside_the_dataset(acdc_dir: Path, capsys) -> None:
    assert main(["--dataset_dir", str(acdc_dir), "--output_dir", str(acdc_dir / "run")]) == 2
    assert "inside the dataset" in capsys.readouterr().err
    assert not (acdc_dir / "run").exists()


def test_demo_on_missing_dataset_is_a_short_error(tmp_path: Path, capsys) -> None:
    assert main(["--dataset_dir", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_preprocess_bench_prints_one_json_line(phantom_dir: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "preprocess.py"), "--data", str(phantom_dir), "--workers", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["volumes"] == 10 and result["slice_shape"] == [1, 128, 128]
    assert result["slices_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["cached_wall_s"] < result["wall_s"]
