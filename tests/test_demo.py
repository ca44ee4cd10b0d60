"""The default job (``python -m acdc_wsss.demo``, run by the session's ``chain_run``), its report, and the
preprocessing benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from acdc_wsss.chain import main as chain_main
from acdc_wsss.demo import main
from tests.commands import run_command

ROOT = Path(__file__).resolve().parents[1]


def test_demo_report_links_tables_figures_curves_and_masks(chain_run: tuple[Path, dict]) -> None:
    out, summary = chain_run
    report = (out / "report.md").read_text()
    assert "| all |" in report and "+ ES labels fused" in report and "baseline CAM" in report
    assert "+ dense CRF" not in report and "`--pseudo_table full`" in report  # the summary table, and how
    links = ("figures/panels.png", "figures/curves.png", "figures/data.png", "predictions/acdc_labels.ctbl")
    for link in links:
        assert f"({link})" in report, link
        assert (out / link).is_file(), link
    # image, baseline CAM, L2G CAM, refined, pseudo label, prediction, gt: 7 columns of 2.4 in at 80 dpi
    assert Image.open(out / "figures" / "panels.png").size[0] == round(7 * 2.4 * 80)
    assert len(list((out / "predictions").glob("*_seg.nii.gz"))) == 2
    counts = json.loads((out / "dataset_summary.json").read_text())
    assert counts["patients"] == {"training": 3, "validation": 1, "testing": 1} and counts["volumes"] == 10
    assert "seed: 0" in report and f"{summary['total_wall_s'] / 60:.1f} min" in report


def test_report_command_redraws_and_refuses_a_non_run(run_copy: Path, tmp_path: Path, capsys) -> None:
    (run_copy / "report.md").unlink()
    assert chain_main(["report", str(run_copy)]) == 0 and (run_copy / "report.md").is_file()
    assert chain_main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "holds no run" in err and not (tmp_path / "nothing").exists()


def test_demo_refuses_output_inside_the_dataset(acdc_dir: Path, capsys) -> None:
    assert main(["--dataset_dir", str(acdc_dir), "--output_dir", str(acdc_dir / "run")]) == 2
    assert "inside the dataset" in capsys.readouterr().err
    assert not (acdc_dir / "run").exists()


def test_demo_on_missing_dataset_is_a_short_error(tmp_path: Path, capsys) -> None:
    assert main(["--dataset_dir", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not exist" in err and "Traceback" not in err


def test_preprocess_bench_prints_one_json_line(phantom_dir: Path) -> None:
    run = run_command(
        [sys.executable, str(ROOT / "bench" / "preprocess.py"), "--data", str(phantom_dir), "--workers", "0"],
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["volumes"] == 10 and result["slice_shape"] == [1, 128, 128]
    assert result["slices_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["cached_wall_s"] < result["wall_s"]
