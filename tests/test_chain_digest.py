"""Byte-for-byte guard of the whole chain: every output of ``chain_run`` (the phantom chain with the tiny
settings of ``conftest.py``, seed 0) has the content recorded in ``fixtures/phantom_chain_digest.json``.

What is compared is content, not file bytes (zip and gzip members carry timestamps): the arrays of each
``.npz``; the voxel data, dtype and affine of each NIfTI; the tensors and numbers of each checkpoint
(``.pt``); the voxels, affine and segment keys of each ``.seg.nrrd``; the pixels of each PNG; the text of
markdown, CSV and colour tables; and the parsed JSON with wall times, checkpoint fingerprints (file times),
config digests (they hash paths) and software versions left out and absolute paths replaced by ``<abs>``.
``cache/`` (file names hash input paths) and ``report.md`` (paths, wall times) are only checked to exist.

Float results may differ between CPU types and library versions, so the fixture records the machine it
was made on and the test is skipped, with the reason, on another one.

A change that alters outputs on purpose regenerates the fixture in one command, in 2 workers as ``make
test`` runs it (the fingerprint holds torch's threads, each worker's share of the cores)::

    .venv/bin/python -m pytest tests/test_chain_digest.py -n 2 --update-digest
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "phantom_chain_digest.json"
#: JSON and checkpoint keys left out of the comparison: wall times, file-time fingerprints, digests of
#: settings that include paths, digests of the source, software versions (the machine fingerprint covers
#: those that matter).
VOLATILE = frozenset(
    {
        "wall_s",
        "total_wall_s",
        "epoch_s",
        "stage1_fingerprint",
        "config_digest",
        "labels_fingerprint",
        "rules_source",
        "versions",
    }
)
#: Files whose content is not compared (only their presence): paths and wall times throughout.
PRESENCE_ONLY = frozenset({"report.md"})


def _cpu() -> str:
    """The CPU's model name and a digest of its feature flags (which kernels the libraries pick depends
    on them), from ``/proc/cpuinfo``; the platform's processor string elsewhere."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor()
    lines = info.read_text(encoding="utf-8", errors="replace").splitlines()
    field = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in lines if ":" in ln}
    flags = " ".join(sorted(field.get("flags", "").split()))
    return f"{field.get('model name', '?')} / flags {hashlib.sha1(flags.encode()).hexdigest()[:12]}"


def machine_fingerprint() -> dict[str, Any]:
    """What float results depend on besides the code: CPU model and kernels, library versions, threads."""
    import monai
    import scipy

    return {
        "machine": platform.machine(),
        "cpu": _cpu(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "monai": monai.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _feed(h: Any, obj: Any) -> None:
    """Update hash ``h`` with a canonical form of ``obj`` (dicts by sorted key, arrays by dtype, shape and
    bytes, floats by ``repr``), leaving out :data:`VOLATILE` keys and absolute paths."""
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            if str(k) in VOLATILE:
                continue
            h.update(repr(str(k)).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(f"[{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, torch.Tensor):
        _feed(h, obj.detach().cpu().numpy())
    elif isinstance(obj, np.ndarray):
        h.update(f"{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, str):
        h.update(repr("<abs>" if obj.startswith("/") else obj).encode())
    elif isinstance(obj, bool | int | float | np.generic) or obj is None:
        h.update(repr(obj.item() if isinstance(obj, np.generic) else obj).encode())
    else:
        raise TypeError(f"no canonical form for {type(obj).__name__} in a chain output")


def content(path: Path) -> Any:
    """The comparable content of one output file (see the module docstring)."""
    name = path.name
    if name.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if name.endswith((".nii.gz", ".nii")):
        img = nib.load(str(path))
        return {"data": np.asanyarray(img.dataobj), "affine": img.affine}
    if name.endswith(".nrrd"):
        import SimpleITK as sitk

        from acdc_wsss.nifti import nrrd_affine

        img = sitk.ReadImage(str(path))
        keys = {k: img.GetMetaData(k) for k in img.GetMetaDataKeys() if k.startswith("Segment")}
        return {"data": sitk.GetArrayFromImage(img), "affine": nrrd_affine(img), "keys": keys}
    if name.endswith(".pt"):
        return torch.load(path, map_location="cpu", weights_only=True)
    if name.endswith(".json"):
        return json.loads(path.read_text(encoding="utf-8"))
    if name.endswith(".png"):
        with Image.open(path) as im:
            return {"mode": im.mode, "pixels": np.asarray(im)}
    return path.read_text(encoding="utf-8")


def run_digest(run: Path) -> dict[str, Any]:
    """``{"present": [every file but cache/ and kept_labels/], "files": {relative path: content hash}}`` of a
    run folder. Kept labels are a cache filed under a fingerprint of the stage-2 code (the export's output,
    which is compared, holds the same labels)."""
    present, files = [], {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        rel = path.relative_to(run).as_posix()
        if {"cache", "kept_labels"} & set(path.relative_to(run).parts[:-1]):
            continue
        present.append(rel)
        if rel in PRESENCE_ONLY:
            continue
        h = hashlib.sha256()
        _feed(h, content(path))
        files[rel] = h.hexdigest()[:16]
    return {"present": present, "files": files}


def test_phantom_chain_outputs_are_unchanged(
    chain_run: tuple[Path, dict], request: pytest.FixtureRequest
) -> None:
    from conftest import TINY_ARGS

    run, _ = chain_run
    digest = run_digest(run)
    fingerprint = machine_fingerprint()
    if request.config.getoption("--update-digest"):
        FIXTURE.parent.mkdir(exist_ok=True)
        record = {"fingerprint": fingerprint, "settings": TINY_ARGS, **digest}
        FIXTURE.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"digest written to {FIXTURE}")
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    if expected["fingerprint"] != fingerprint or expected["settings"] != TINY_ARGS:
        pytest.skip(
            f"digest recorded on {expected['fingerprint']} with {expected['settings']}; this is "
            f"{fingerprint} with {TINY_ARGS} (float results differ between machines): regenerate with "
            "--update-digest to compare here"
        )
    changed = sorted(k for k in expected["files"] if digest["files"].get(k) != expected["files"][k])
    assert not changed, f"{len(changed)} outputs changed: {changed}"
    assert digest["present"] == expected["present"]
