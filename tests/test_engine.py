"""The training loop's guards (acdc_wsss.engine, acdc_wsss.safeload): a NaN loss stops training with the
stage and epoch named, progress bars stay off log files, and ``.pt`` files carrying pickled objects are
refused before anything in them runs."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine
from monai.transforms import Compose, Randomizable
from torch import nn

from acdc_wsss.engine import NonFiniteLossError, build_trainer, resume, training_loader
from acdc_wsss.safeload import UnsafeFileError, from_plain, load_pt, to_plain
from acdc_wsss.utils import code_tree, progress_bar, source_digest, write_npz


def _linear_run(out: Path, nan_epoch: int | None, epochs: int = 3, progress: bool = False) -> Any:
    """A real (tiny) training: a linear model fitted by SGD; the inputs of epoch ``nan_epoch`` hold a NaN."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [torch.randn(4, 2) for _ in range(3)]

    def step(engine: Any, x: torch.Tensor) -> dict[str, float]:
        if engine.state.epoch == nan_epoch:
            x = x.clone()
            x[0, 0] = float("nan")
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    trainer = build_trainer(
        step, output_dir=out, save_dict={"model": model, "optimizer": opt}, progress=progress
    )
    trainer.run(data, max_epochs=epochs)
    return trainer


def test_nan_loss_stops_at_once_naming_stage_and_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run" / "l2g"
    with pytest.raises(NonFiniteLossError, match=r"stage l2g: loss loss=nan at epoch 2, iteration 1") as e:
        _linear_run(out, nan_epoch=2)
    assert "last.pt holds epoch 1" in str(e.value)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert isinstance(e.value, ValueError)  # a user error: one "error:" line on the command line


def test_no_progress_bar_off_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="acdc_wsss.engine"):
        _linear_run(tmp_path / "l2g", nan_epoch=None, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "train" not in err  # stderr is no terminal under pytest: no tqdm bar
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [m.split(":")[0] for m in lines] == ["epoch 1", "epoch 2", "epoch 3"]


class _Marks(torch.utils.data.Dataset):
    """Item ``i`` leaves a file ``<i>-<pid>`` behind, so the items computed in any process can be counted."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder, self.n = folder, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        (self.folder / f"{i}-{os.getpid()}").touch()
        return i


@pytest.mark.parametrize("enabled", [True, False])
def test_a_progress_bar_over_a_dataloader_computes_each_item_once(tmp_path: Path, enabled: bool) -> None:
    loader = torch.utils.data.DataLoader(_Marks(tmp_path, 5), batch_size=None, num_workers=2)
    assert list(progress_bar(loader, "items", enabled)) == [0, 1, 2, 3, 4]
    computed = sorted(int(p.name.split("-")[0]) for p in tmp_path.iterdir())
    assert computed == [0, 1, 2, 3, 4]  # a second, unread iterator's workers computed 4 more before


class _Payload:
    """Unpickling this writes ``marker``: what a tampered ``.pt`` could do on a trusting ``torch.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code from a .pt ran"))


def _tamper(path: Path, marker: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "note": _Payload(marker)}, path)


def test_pickled_object_in_a_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    trainer = _linear_run(tmp_path / "l2g", nan_epoch=None)
    last, marker = tmp_path / "l2g" / "last.pt", tmp_path / "marker.txt"
    _tamper(last, marker)
    with pytest.raises(UnsafeFileError, match=rf"{last}: refused to load: it carries pickled Python objects"):
        resume(last, trainer.save_dict)
    with pytest.raises(
        UnsafeFileError, match=r"pickled Python objects \(it names \S+\), whose loading could run code"
    ):
        load_pt(last)
    assert not marker.exists()
    # the payload is live: a trusting load would have run it
    torch.load(last, weights_only=False)
    assert marker.read_text() == "code from a .pt ran"


def test_tampered_stage_checkpoint_is_refused(run_copy: Path, tmp_path: Path) -> None:
    from acdc_wsss.l2g import load_l2g

    best, marker = run_copy / "l2g" / "best.pt", tmp_path / "marker.txt"
    _tamper(best, marker)
    with pytest.raises(UnsafeFileError, match=str(best)):
        load_l2g(run_copy, "best")
    assert not marker.exists()


def test_tampered_cache_file_is_rebuilt_without_running(run_copy: Path, tmp_path: Path) -> None:
    from acdc_wsss.data.slices import SliceDataset
    from acdc_wsss.layout import RunLayout

    run = RunLayout(run_copy)
    items = run.split("validation")[:1]
    fresh = SliceDataset(items, cache_dir=tmp_path / "cache", progress=False)
    (cached,) = (tmp_path / "cache").glob("*.pt")
    marker = tmp_path / "marker.txt"
    with cached.open("wb") as f:
        pickle.dump({"image": _Payload(marker)}, f)
    again = SliceDataset(items, cache_dir=tmp_path / "cache", progress=False)
    assert not marker.exists()
    assert torch.equal(again.volumes[0]["image"], fresh.volumes[0]["image"])
    ops = [
        [(op["class"], op["orig_size"]) for op in d.volumes[0]["image"].applied_operations]
        for d in (again, fresh)
    ]
    assert ops[0] == ops[1] and ops[0]
    reloaded = SliceDataset(items, cache_dir=tmp_path / "cache", progress=False)  # the rebuilt file loads
    assert reloaded.volumes[0]["image"].meta.keys() == fresh.volumes[0]["image"].meta.keys()
    shutil.rmtree(tmp_path / "cache")


def test_plain_form_round_trip() -> None:
    import numpy as np
    from monai.data import MetaTensor
    from monai.utils import SpaceKeys, TraceKeys

    t = MetaTensor(torch.arange(6.0).reshape(1, 2, 3), meta={"space": SpaceKeys.RAS, "dim": np.arange(3)})
    extra = {"m": np.eye(2), TraceKeys.CLASS_NAME: "Spacingd"}  # MONAI keys trace entries with enums
    t.applied_operations = [{"id": TraceKeys.NONE, "orig_size": (2, 3), "extra": extra}]
    back = from_plain(torch.load(_save_plain(t), weights_only=True))
    assert isinstance(back, MetaTensor) and torch.equal(back.as_tensor(), t.as_tensor())
    assert back.meta["space"] is SpaceKeys.RAS and np.array_equal(back.meta["dim"], np.arange(3))
    assert back.applied_operations[0]["id"] is TraceKeys.NONE
    assert back.applied_operations[0]["orig_size"] == (2, 3)
    assert back.applied_operations[0]["extra"][TraceKeys.CLASS_NAME] == "Spacingd"  # found by the enum


def _save_plain(obj: Any) -> Any:
    import io

    buf = io.BytesIO()
    torch.save(to_plain(obj), buf)
    buf.seek(0)
    return buf


class _Draw(Randomizable):
    """A random transform whose output is its draw."""

    def randomize(self, data: Any = None) -> None:
        self.value = float(self.R.rand())

    def __call__(self, data: dict) -> dict:
        self.randomize()
        return {"draw": self.value}


class _Draws(torch.utils.data.Dataset):
    """Its random transforms under a name of its own (as a wrapper's would be): found through the loader."""

    def __init__(self) -> None:
        self.chain = Compose([_Draw()])

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> float:
        return self.chain({})["draw"]


def _draws(seeded: bool = True, seed: int = 0, epoch: int = 1) -> list[list[float]]:
    """One epoch's batches of draws through 2 DataLoader workers (batch k from worker k % 2); ``seeded``
    False: the epoch's seeding alone, the workers not reseeded."""
    ds = _Draws()
    loader, epoch_start = training_loader(ds, ds.chain, batch_size=2, num_workers=2, seed=seed)
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    epoch_start(engine)
    if not seeded:
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    return [batch.tolist() for batch in loader]


def test_dataloader_workers_draw_their_own_augmentation_from_the_seed_and_epoch() -> None:
    plain = _draws(seeded=False)
    assert plain[0] == plain[1] and plain[2] == plain[3]  # without it, the second worker repeats the first
    draws = _draws()
    flat = [d for batch in draws for d in batch]
    assert len(set(flat)) == 8  # every sample its own draw
    assert _draws() == draws  # from (seed, epoch, worker) alone
    assert _draws(epoch=2) != draws and _draws(seed=1) != draws


def test_write_npz_round_trip_atomic_and_a_full_disk_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import numpy as np

    arrays = {
        "scores": np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float16),
        "labels": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "tags": np.eye(3, dtype=np.float32),
    }
    path = write_npz(tmp_path / "v.npz", **arrays)
    with np.load(path) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v)
    before = path.read_bytes()

    def full_disk(fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write's error names no file

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    with pytest.raises(OSError) as info:
        write_npz(path, labels=arrays["labels"])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["v.npz"]


def test_the_source_digest_follows_the_code_not_its_docstrings_or_comments(tmp_path: Path) -> None:
    code = '"""About m."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n'
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_text(code)
    before = source_digest(tmp_path / "a")
    variants = {
        "b": code.replace("Doc.", "Another doc.").replace("# one", "# two").replace("x + 1", "x+1"),
        "c": code.replace("x + 1", "x + 2"),  # the code changed
        "d": code.replace('    """Doc."""\n', ""),  # a docstring removed: the same code
    }
    for name, text in variants.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.py").write_text(text)
    assert source_digest(tmp_path / "b") == before == source_digest(tmp_path / "d")
    assert source_digest(tmp_path / "c") != before
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "n.py").write_text(code)  # the same code under another name
    assert source_digest(tmp_path / "e") != before
    assert "About m" not in code_tree(code) and "Doc." not in code_tree(code)
    with pytest.raises(SyntaxError, match=r"broken\.py"):
        code_tree("def f(:\n", "broken.py")
