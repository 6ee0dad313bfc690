"""Training engine: GAN step, checkpoints + exact resume, signals, validation table, export, CLI, DDP (gloo)."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from skimage.data import astronaut
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.utils.data import Dataset

from facedeblur.errors import DataError
from facedeblur.models import InferenceAdapter
from facedeblur.train.checkpoint import (CheckpointError, flatten_state, load_state, rng_state, save_state,
                                         set_rng_state, unflatten_state)
from facedeblur.train.recipes import RecipeError, resolve_recipe
from facedeblur.train.trainer import SampleStream, Trainer, TrainOptions, train
from facedeblur.train.validation import SEVERITY_BINS, format_table, psnr, severity_bin, ssim, summarize

TINY_G = {"width": 4, "num_res": 1, "mapping_width": 8, "mapping_layers": 2}
TINY_RECIPE = {"batch": 2, "crop": 32, "epoch_samples": 4, "zero_init_output": False,
               "discriminator": {"width": 4, "max_width": 8, "levels": 3}}
FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}


class SyntheticFaces(Dataset):
    """Shifted astronaut crops: blurry = mean of N frames, sharp = frame i, u = i/(N-1).

    ``crop`` draws a random crop from torch's global RNG (like a real augmentation), so the sample seeding of
    the trainer is exercised.
    """

    def __init__(self, n: int = 6, size: int = 40, frames: int = 5, crop: int | None = 32, val: bool = False,
                 step: int = 2) -> None:
        img = torch.from_numpy(astronaut()).permute(2, 0, 1).float() / 255
        self.items = []
        for k in range(n):
            y, x = 40 + (37 * k) % 300, 60 + (53 * k) % 300
            frs = [img[:, y:y + size, x + step * j:x + step * j + size] for j in range(frames)]
            blur = torch.stack(frs).mean(0)
            for i in range(frames):
                if val and i != frames // 2:
                    continue
                self.items.append((blur, frs[i], i / (frames - 1)))
        self.crop = crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b, s, u = self.items[i]
        if self.crop:
            oy, ox = torch.randint(0, b.shape[1] - self.crop + 1, (2,)).tolist()
            b, s = b[:, oy:oy + self.crop, ox:ox + self.crop], s[:, oy:oy + self.crop, ox:ox + self.crop]
        mse = ((b - s) ** 2).mean()
        return {"blurry": b.clone(), "sharp": s.clone(), "u": torch.tensor(u, dtype=torch.float32),
                "severity": (10 * torch.log10(1 / mse)).float()}


@pytest.fixture(scope="module")
def data():
    return SyntheticFaces(), SyntheticFaces(n=4, size=32, crop=None, val=True)


def _trainer(tmp_path, data, **opts) -> Trainer:
    recipe = {**TINY_RECIPE, **opts.pop("recipe", {})}
    options = TrainOptions(**{**FAST, **opts})
    return Trainer("cfmd-gan.lite", data[0], data[1], out_dir=tmp_path / "run", recipe_overrides=recipe,
                   arch_overrides=TINY_G, options=options)


def _run(tmp_path, data, name="run", **opts):
    recipe = {**TINY_RECIPE, **opts.pop("recipe", {})}
    return train("cfmd-gan.lite", data[0], data[1], out_dir=tmp_path / name, recipe_overrides=recipe,
                 arch_overrides=TINY_G, **{**FAST, **opts})


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ steps


def test_one_gan_step_changes_g_and_d(tmp_path, data):
    tr = _trainer(tmp_path, data)
    assert tr.gan and tr.d is not None and tr.adapter.control and tr.adapter.multiscale
    assert tr.method.sample_kind == "moments"
    g0 = {k: v.clone() for k, v in tr.g.state_dict().items()}
    d0 = {k: v.clone() for k, v in tr.d.state_dict().items()}
    batch = torch.utils.data.default_collate([data[0][0], data[0][7]])
    parts = tr.train_step(batch)
    assert {"d_enc", "d_dec", "d_q", "g_pix", "g_adv", "g_ar", "g_total"} <= set(parts)
    assert all(math.isfinite(float(v)) for v in parts.values())
    changed_g = [k for k in g0 if not torch.equal(g0[k], tr.g.state_dict()[k])]
    changed_d = [k for k in d0 if not torch.equal(d0[k], tr.d.state_dict()[k])]
    assert any("mapping" in k for k in changed_g) and any("head" in k for k in changed_g)
    assert any("q_head" in k for k in changed_d) and any("global_head" in k for k in changed_d)
    assert not any(p.requires_grad for p in tr.d.parameters())  # D frozen for the G step
    d1 = {k: v.clone() for k, v in tr.d.state_dict().items()}
    tr.train_step(batch)
    assert not _states_equal(d1, tr.d.state_dict())  # unfrozen again for the next D step


def test_supervised_when_no_gan(tmp_path, data):
    tr = _trainer(tmp_path, data, gan=False)
    assert not tr.gan and tr.d is None and tr.opt_d is None
    g0 = {k: v.clone() for k, v in tr.g.state_dict().items()}
    parts = tr.train_step(torch.utils.data.default_collate([data[0][1], data[0][2]]))
    assert set(parts) == {"g_pix", "g_total"}
    assert not _states_equal(g0, tr.g.state_dict())


def test_perceptual_off_is_recorded_and_printed_once(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)
    res = _run(tmp_path, data, max_steps=1, val_every=0)
    assert res.perceptual_loss.startswith("off (lpips unavailable: ")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["perceptual_loss"] == res.perceptual_loss
    assert meta["status"] == "max_steps" and meta["step"] == 1
    out = capsys.readouterr().out
    assert out.count("perceptual loss: off (lpips unavailable") == 1


# ------------------------------------------------------------------------------------------ checkpoints


def test_flatten_roundtrip_of_adam_and_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    model(torch.randn(4, 3)).sum().backward()
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.99)
    opt.step()
    sched.step()
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "np": np.arange(5, dtype=np.uint32),
             "misc": {"t": (1, 2.5, None), 3: [True, float("nan")], "s": "x"}}
    tensors, struct = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    json.dumps(struct)  # the structure is plain JSON
    back = unflatten_state(tensors, struct)
    assert back["opt"]["param_groups"] == state["opt"]["param_groups"]
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["opt"]["state"]) == {0, 1}  # int keys survive
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [0, 1, 2, 3, 4]
    assert back["misc"]["t"] == (1, 2.5, None) and math.isnan(back["misc"][3][1])
    path = tmp_path / "c.safetensors"
    save_state(path, state)
    loaded = load_state(path)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    opt2.load_state_dict(loaded["opt"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert [p for p in tmp_path.iterdir()] == [path]  # no temporary file left behind


def test_rng_state_roundtrip(tmp_path):
    import random

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_state(tmp_path / "r.safetensors", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(load_state(tmp_path / "r.safetensors")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_bad_checkpoints_raise_typed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_state(tmp_path / "missing.safetensors")
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a facedeblur training checkpoint"):
        load_state(other)
    good = tmp_path / "good.safetensors"
    save_state(good, {"w": torch.arange(1000.0)})
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state(truncated)


def test_exact_resume_matches_straight_run(tmp_path, data):
    # 2 steps per epoch: the LR decays at steps 2, 4 and 6, across the resume point
    straight = _trainer(tmp_path / "a", data, max_steps=6, val_every=0, ckpt_every=0)
    assert straight.run().step == 6
    first = _trainer(tmp_path / "b", data, max_steps=3, val_every=0, ckpt_every=0)
    assert first.run().step == 3
    assert (tmp_path / "b" / "run" / "last" / "checkpoint.safetensors").is_file()
    second = _trainer(tmp_path / "b", data, max_steps=6, val_every=0, ckpt_every=0)  # resumes automatically
    assert second.step == 3 and second.resumed_from
    assert second.run().step == 6
    assert _states_equal(straight.g.state_dict(), second.g.state_dict())
    assert _states_equal(straight.d.state_dict(), second.d.state_dict())
    lr0 = straight.recipe.optimizer["lr"]
    assert straight.opt_g.param_groups[0]["lr"] == second.opt_g.param_groups[0]["lr"] == pytest.approx(lr0 * .99 ** 3)
    sa, sb = straight.opt_d.state_dict()["state"], second.opt_d.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # and the run differs from a run that did not train (the comparison can fail)
    fresh = _trainer(tmp_path / "c", data, max_steps=1, val_every=0)
    assert not _states_equal(fresh.g.state_dict(), second.g.state_dict())


def test_resume_refuses_a_different_architecture(tmp_path, data):
    _run(tmp_path, data, max_steps=1, val_every=0)
    with pytest.raises(CheckpointError, match="use another"):
        train("cfmd-gan.lite", data[0], data[1], out_dir=tmp_path / "run", recipe_overrides=TINY_RECIPE,
              arch_overrides={**TINY_G, "width": 8}, max_steps=2, **FAST)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _run(tmp_path, data, name="other", max_steps=1, resume=True)


class _SignalOnItem(SyntheticFaces):
    """Sends SIGTERM to this process when item number ``at`` is drawn (a scheduler stopping the job)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(i)


def test_sigterm_saves_checkpoint_and_stops_cleanly(tmp_path, data):
    def not_caught(signum, frame):
        raise RuntimeError("the trainer did not catch SIGTERM")

    old = signal.signal(signal.SIGTERM, not_caught)
    try:
        ds = _SignalOnItem(at=5)  # batch 2: the 5th item is drawn in step 3
        res = train("cfmd-gan.lite", ds, data[1], out_dir=tmp_path / "run", recipe_overrides=TINY_RECIPE,
                    arch_overrides=TINY_G, max_steps=10, val_every=0, **FAST)
        assert signal.getsignal(signal.SIGTERM) is not_caught  # handler restored
    finally:
        signal.signal(signal.SIGTERM, old)
    assert res.interrupted and res.status == "interrupted (SIGTERM)" and res.step == 3
    st = load_state(tmp_path / "run" / "last" / "checkpoint.safetensors")
    assert st["step"] == 3
    assert not (tmp_path / "run" / "export").exists() and json.loads(
        (tmp_path / "run" / "run.json").read_text())["status"] == "interrupted (SIGTERM)"
    res2 = train("cfmd-gan.lite", data[0], data[1], out_dir=tmp_path / "run", recipe_overrides=TINY_RECIPE,
                 arch_overrides=TINY_G, max_steps=4, val_every=0, **FAST)
    assert res2.step == 4 and res2.status == "max_steps"


def test_time_budget_stops_validates_and_checkpoints(tmp_path, data):
    res = _run(tmp_path, data, max_minutes=1e-9, max_steps=50, val_every=0)
    assert res.status == "time_budget" and res.step == 1
    assert res.last_validation is not None and res.last_validation["n"] == len(data[1])
    assert load_state(tmp_path / "run" / "last" / "checkpoint.safetensors")["step"] == 1


def test_data_workers_do_not_change_the_result(tmp_path, data):
    a = _trainer(tmp_path / "a", data, max_steps=2, val_every=0, workers=0)
    a.run()
    b = _trainer(tmp_path / "b", data, max_steps=2, val_every=0, workers=2)
    b.run()
    assert _states_equal(a.g.state_dict(), b.g.state_dict())


def test_sample_stream_is_a_function_of_position():
    full = SampleStream(5, 2, seed=1, start_step=0)
    it = iter(full)
    first = [next(it) for _ in range(12)]
    later = iter(SampleStream(5, 2, seed=1, start_step=3))
    assert [next(later) for _ in range(6)] == first[6:]
    # every item once per chunk of n positions
    assert sorted(i for i, _ in first[:5]) == list(range(5))
    # ranks split each global batch without overlap
    r0, r1 = iter(SampleStream(5, 2, seed=1, world_size=2, rank=0)), iter(SampleStream(5, 2, seed=1, world_size=2,
                                                                                     rank=1))
    assert [next(r0) for _ in range(2)] + [next(r1) for _ in range(2)] == first[:4]


# ------------------------------------------------------------------------------------------ validation


def test_psnr_ssim_match_skimage():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 24, 20))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for i in range(2):
        ga, gb = a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0)
        assert psnr(tb, ta)[i].item() == pytest.approx(peak_signal_noise_ratio(ga, gb, data_range=1), abs=1e-9)
        assert ssim(tb, ta)[i].item() == pytest.approx(
            structural_similarity(ga, gb, data_range=1, channel_axis=-1), abs=1e-9)


def test_summary_table_by_severity_bins():
    rows = [{"severity": s, "psnr_blurry": s, "ssim_blurry": 0.8, "psnr": s + g, "ssim": 0.9}
            for s, g in [(25.0, 3.0), (27.9, 1.0), (28.0, 2.0), (33.0, 0.5), (40.0, -1.0), (36.0, 1.0)]]
    t = summarize(rows)
    assert {k: v["n"] for k, v in t["bins"].items()} == {"<28": 2, "28-32": 1, "32-36": 1, ">=36": 2}
    assert t["n"] == 6 and t["psnr_gain"] == pytest.approx(6.5 / 6)
    assert t["bins"]["<28"]["psnr_gain"] == pytest.approx(2.0)
    assert t["bins"][">=36"]["psnr_gain"] == pytest.approx(0.0)
    assert t["worst_bin"] == ">=36"
    assert t["ssim_gain"] == pytest.approx(0.1)
    assert [severity_bin(x) for x in (27.99, 28.0, 35.99, 36.0)] == ["<28", "28-32", "32-36", ">=36"]
    text = format_table(t)
    assert all(label in text for label, _, _ in SEVERITY_BINS) and "worst bin: >=36" in text
    empty = summarize(rows[:1])
    assert empty["bins"]["28-32"]["n"] == 0 and empty["worst_bin"] == "<28"


class _PlusOffset(InferenceAdapter):
    """An adapter whose "network" returns the input plus 0.4 grey levels (u checked to be passed)."""

    def forward(self, model, x, u=None):
        assert u is not None and u.shape == (x.shape[0],)
        return [x + 0.4 / 255]


def test_trainer_validation_uses_blurry_and_output(tmp_path, data):
    tr = _trainer(tmp_path, data)
    table = tr.validate()
    val = data[1]
    assert table["n"] == len(val) == sum(b["n"] for b in table["bins"].values())
    expected_blurry = np.mean([peak_signal_noise_ratio(val[i]["sharp"].numpy(), val[i]["blurry"].numpy(),
                                                       data_range=1) for i in range(len(val))])
    assert table["psnr_blurry"] == pytest.approx(expected_blurry, abs=1e-6)
    assert table["psnr"] != pytest.approx(table["psnr_blurry"], abs=1e-3)  # the output is not the input
    # outputs are scored as the 8-bit images users get: a sub-grey-level change is rounded as it will be
    tr.adapter = _PlusOffset(control=True, multiscale=True)
    rounded = tr.validate()
    outs = [np.round(np.clip(val[i]["blurry"].numpy() + 0.4 / 255, 0, 1) * 255) / 255 for i in range(len(val))]
    expected = np.mean([peak_signal_noise_ratio(val[i]["sharp"].numpy(), outs[i], data_range=1)
                        for i in range(len(val))])
    assert rounded["psnr"] == pytest.approx(expected, abs=1e-5)


def test_validation_summarised_per_source(tmp_path, data):
    """A validation set that names each item's source (InterleavedSet) gets one table per source as well."""
    from facedeblur.data.strong import InterleavedSet

    tr = _trainer(tmp_path, data)
    val = data[1]
    half = len(val) // 2
    sub_a = torch.utils.data.Subset(val, range(half))
    sub_b = torch.utils.data.Subset(val, range(half, len(val)))
    tr.val_ds = InterleavedSet([sub_a, sub_b], ["a", "b"])
    table = tr.validate()
    assert set(table["sources"]) == {"a", "b"}
    assert table["sources"]["a"]["n"] == half and table["sources"]["b"]["n"] == len(val) - half
    n = table["n"]
    mean = (table["sources"]["a"]["psnr"] * half + table["sources"]["b"]["psnr"] * (len(val) - half)) / n
    assert table["psnr"] == pytest.approx(mean, abs=1e-9)
    tr.val_ds = val
    assert "sources" not in tr.validate()


def test_validation_logged_best_kept_and_export(tmp_path, data, monkeypatch):
    import facedeblur.weights as weights_mod

    calls = []

    def fake_save_pretrained(model, card, out_dir, dtype=None, *, overwrite=False):
        calls.append((model, card, out_dir, dtype, overwrite))

    monkeypatch.setattr(weights_mod, "save_pretrained", fake_save_pretrained, raising=False)
    res = _run(tmp_path, data, max_steps=4, val_every=2, ckpt_every=2, export=str(tmp_path / "exp"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    vals = [r for r in log if r["type"] == "val"]
    assert [v["step"] for v in vals] == [2, 4] and all(set(v["bins"]) == {"<28", "28-32", "32-36", ">=36"}
                                                       for v in vals)
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2, 3, 4]
    assert all("samples_per_s" in r and "g_pix" in r and r["data_wait_s_per_step"] >= 0 for r in log if r["type"] == "train")
    best_step = max(vals, key=lambda v: v["psnr_gain"])["step"]
    assert res.best["step"] == best_step and res.best["worst_bin"] in res.best["bins"]
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    assert set(best) == set(calls[0][0].state_dict())
    # export: the best generator, fp16, with the training record in the card
    assert [c[2] for c in calls] == [tmp_path / "run" / "export", tmp_path / "exp"]
    model, card, _, dtype, _ = calls[0]
    assert dtype == torch.float16 and [c[4] for c in calls] == [True, False]
    assert _states_equal(model.state_dict(), best)
    assert card.arch_kwargs["width"] == 4 and card.training["record"]["iterations"] == 4
    assert card.training["record"]["perceptual_loss"] == res.perceptual_loss
    assert card.metrics["validation"]["step"] == best_step and "bins" in card.metrics["validation"]
    assert res.exported == [str(tmp_path / "run" / "export"), str(tmp_path / "exp")]


def test_ema_weights_are_validated_and_kept(tmp_path, data):
    tr = _trainer(tmp_path, data, max_steps=3, val_every=0, recipe={"ema": 0.5})
    tr.run()
    assert not _states_equal(tr.ema.state_dict(), tr.g.state_dict())
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    assert _states_equal(best, tr.ema.state_dict())


# ------------------------------------------------------------------------------------------ recipe + CLI


def test_recipe_resolution_and_errors():
    from facedeblur.models import get_card

    card = get_card("cfmd-gan.paper")
    r = resolve_recipe(card.training)
    assert (r.crop, r.batch, r.epochs, r.epoch_samples) == (256, 8, 200, 12000)
    assert r.optimizer["lr"] == 1e-4 and r.loss.q_d == 0.05 and r.loss.per == 0.01
    assert r.steps_per_epoch() == 1500 and r.total_steps() == 300_000
    r2 = resolve_recipe(card.training, {"loss": {"adv": 0.0}}, {"batch": 4})
    assert r2.loss.adv == 0.0 and r2.loss.pix == 1.0 and r2.batch == 4
    with pytest.raises(RecipeError, match="unknown training recipe keys"):
        resolve_recipe(card.training, {"lr": 1e-3})
    with pytest.raises(RecipeError, match="multiple of 4"):
        resolve_recipe(card.training, {"crop": 30}, pad_multiple=card.input.pad_multiple)
    assert resolve_recipe(card.training, {"crop": 30}).crop == 30  # a network without down-sampling
    with pytest.raises(RecipeError, match="unknown keys.*per_clip"):
        resolve_recipe(card.training, {"vla": {"maxlen": 7}})
    with pytest.raises(RecipeError, match="recipe 'vla'.*odd"):
        resolve_recipe(card.training, {"vla": {"max_len": 8}})
    rv = resolve_recipe(card.training, {"vla_fraction": 0.3, "vla": {"per_clip": 5, "min_psnr": 20}})
    assert rv.data["vla_fraction"] == 0.3 and rv.data["vla"]["per_clip"] == 5 and rv.data["vla"]["max_len"] == 13
    with pytest.raises(RecipeError, match="ema"):
        resolve_recipe(card.training, {"ema": 1.5})
    assert r.loss.psnr == 0.0  # the paper recipe has no PSNR loss
    assert resolve_recipe(card.training, {"loss": {"psnr": 1.0, "psnr_floor": 1e-5}}).loss.psnr_floor == 1e-5
    with pytest.raises(RecipeError, match="psnr_floor"):
        resolve_recipe(card.training, {"loss": {"psnr": 1.0, "psnr_floor": 0.0}})
    r3 = resolve_recipe(card.training, {"identity_fraction": 0.2})  # data-engine keys pass through
    assert r3.to_dict()["identity_fraction"] == 0.2 and "data" not in r3.to_dict()
    r4 = resolve_recipe(card.training, {"static_fraction": 0.05, "static_noise": [0.3, 1]})
    assert r4.to_dict()["static_fraction"] == 0.05 and r4.to_dict()["static_noise"] == [0.3, 1.0]
    for bad in ([1.0], [2, 1], "0.3,1.2", [0.3, True]):
        with pytest.raises(RecipeError, match="static_noise"):
            resolve_recipe(card.training, {"static_noise": bad})
    # a shipped card's records (how its weights were made) are not recipe keys: training from it still works
    shipped = {**card.training, "stages": [{"name": "stage 1", "steps": 10}], "gate_calibration": {"windows": 3},
               "record": {"iterations": 10}}
    assert resolve_recipe(shipped).to_dict() == r.to_dict()


def _parse(argv):
    from facedeblur.train.cli import add_train_arguments

    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_cli_arguments_and_missing_data_engine(tmp_path, monkeypatch, capsys):
    import facedeblur.data as data_mod
    from facedeblur.train.cli import run_from_args

    args = _parse(["cfmd-gan.lite", "--data", str(tmp_path), "--batch", "2", "--crop", "64", "--no-gan",
                   "--resume", "--max-steps", "3"])
    assert args.model == "cfmd-gan.lite" and args.batch == 2 and args.no_gan and args.resume is True
    assert _parse(["cfmd-gan"]).resume == "auto"
    conv = _parse(["cfmd-gan.lite", "--init", "ckpt.safetensors", "--max-steps", "0", "--export", "out"])
    assert conv.init == "ckpt.safetensors" and conv.max_steps == 0
    with pytest.raises(SystemExit):
        _parse(["cfmd-gan.lite", "--max-steps", "-1"])
    monkeypatch.delattr(data_mod, "build_datasets", raising=False)
    with pytest.raises(DataError, match="build_datasets is not available"):
        run_from_args(args)
    with pytest.raises(DataError, match="--data"):
        run_from_args(_parse(["cfmd-gan.lite"]))
    from facedeblur.train.cli import main

    assert main(["cfmd-gan.lite", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_cli_trains_with_config_overrides(tmp_path, monkeypatch, data):
    import facedeblur.data as data_mod
    from facedeblur.train.cli import run_from_args

    seen = {}

    def fake_build(data_dir, card, *, seed=0, cache_dir=None, progress=True):
        seen["card"] = card
        return data[0], data[1]

    monkeypatch.setattr(data_mod, "build_datasets", fake_build, raising=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("training:\n  epoch_samples: 4\n  discriminator: {width: 4, max_width: 8, levels: 3}\n")
    args = _parse(["cfmd-gan.lite", "--data", str(tmp_path), "--config", str(cfg), "--out", str(tmp_path / "runs"),
                   "--batch", "2", "--crop", "32", "--max-steps", "1", "--workers", "0", "--threads", "1",
                   "--val-max", "1", "--no-progress"])
    assert run_from_args(args) == 0
    assert seen["card"].training["crop"] == 32 and seen["card"].training["batch"] == 2
    meta = json.loads((tmp_path / "runs" / "cfmd-gan.lite" / "run.json").read_text())
    assert meta["recipe"]["discriminator"] == {"width": 4, "max_width": 8, "levels": 3}
    assert meta["recipe"]["epoch_samples"] == 4 and meta["step"] == 1
    assert (tmp_path / "runs" / "cfmd-gan.lite" / "last" / "checkpoint.safetensors").is_file()


# ------------------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    tr = Trainer("cfmd-gan.lite", SyntheticFaces(), SyntheticFaces(n=2, size=32, crop=None, val=True),
                 out_dir=os.path.join(out, "run"), recipe_overrides=TINY_RECIPE, arch_overrides=TINY_G,
                 options=TrainOptions(**{**FAST, "max_steps": 2, "val_every": 0}))
    res = tr.run()
    assert tr.dist.enabled and tr.dist.world_size == world and res.step == 2
    save_file({k: v.contiguous() for k, v in tr.g.module.state_dict().items()}, os.path.join(out, f"g{rank}.st"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~30 s on a loaded 2-core machine: two processes each import torch and build the models
def test_ddp_gloo_two_ranks_end_identical(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    g0, g1 = load_file(str(tmp_path / "g0.st")), load_file(str(tmp_path / "g1.st"))
    assert _states_equal(g0, g1)
    torch.manual_seed(0)  # the trainer's initialisation seed: training moved the weights
    from facedeblur.models.cfmd_gan import cfmd_gan

    assert not _states_equal(g0, cfmd_gan(**TINY_G).state_dict())
    ckpt = load_state(tmp_path / "run" / "last" / "checkpoint.safetensors")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 2
    assert _states_equal(ckpt["g"], g0)


@pytest.mark.parametrize("zero", [True, False])
def test_recipe_zero_init_output(tmp_path, data, zero):
    """The recipe key zero_init_output starts G as the identity (init only; architecture kwargs unchanged)."""
    trainer = _trainer(tmp_path, data, recipe={"zero_init_output": zero})
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out = trainer.g(x.to(trainer.device), torch.tensor([0.5]))[-1].cpu()
    assert torch.equal(out, x) == zero
    assert "zero_init_output" not in trainer.arch_kwargs


def test_recipe_mapping_init(tmp_path, data):
    """mapping_init: kaiming re-initialises G_M so u visibly moves the controls; bad values are a RecipeError."""
    change = {}
    for mode in ("default", "kaiming"):
        g = _trainer(tmp_path / mode, data, recipe={"mapping_init": mode}).g
        with torch.no_grad():
            e0, d0 = g.mapping(torch.tensor([0.0]))
            e1, d1 = g.mapping(torch.tensor([1.0]))
        change[mode] = min(((a - b).norm() / a.norm()).item() for a, b in zip(e0 + d0, e1 + d1))
    assert change["kaiming"] > 0.3 and change["kaiming"] > 3 * change["default"]
    with pytest.raises(RecipeError, match="mapping_init"):
        resolve_recipe({"mapping_init": "xavier"})


def test_recipe_data_fractions_validated():
    assert resolve_recipe({"centre_fraction": 0.5}).data == {"centre_fraction": 0.5}
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(RecipeError, match="centre_fraction must be a fraction"):
            resolve_recipe({"centre_fraction": bad})


def test_recipe_output_init_scale(tmp_path, data):
    torch.manual_seed(0)
    from facedeblur.models.cfmd_gan import cfmd_gan

    reference = cfmd_gan(**TINY_G).state_dict()["head.weight"]
    g = _trainer(tmp_path, data, recipe={"output_init_scale": 0.1}).g
    assert torch.allclose(g.state_dict()["head.weight"].cpu(), 0.1 * reference)
    for bad in (0, 1.5, "x"):
        with pytest.raises(RecipeError, match="output_init_scale"):
            resolve_recipe({"output_init_scale": bad})


def test_init_fine_tunes_from_checkpoint_or_weights(tmp_path, data):
    from facedeblur.errors import WeightsMismatchError

    src = _trainer(tmp_path / "src", data, max_steps=2, val_every=0, recipe={"ema": 0.5})
    src.run()
    ckpt = tmp_path / "src" / "run" / "last" / "checkpoint.safetensors"
    # a training checkpoint: its EMA, a fresh optimizer and step 0
    ft = _trainer(tmp_path / "ft", data, max_steps=1, val_every=0, init=str(ckpt))
    assert ft.step == 0 and ft.initialised_from == str(ckpt) and not ft.opt_g.state_dict()["state"]
    assert _states_equal(ft.g.state_dict(), src.ema.state_dict())
    assert not _states_equal(ft.g.state_dict(), src.g.state_dict())
    # a weights file with a calibrated gate: weights taken, the gate back to the identity
    sd = {k: v.clone() for k, v in src.g.state_dict().items()}
    sd["gate.alphas"].fill_(0.3)
    save_file(sd, str(tmp_path / "w.safetensors"))
    ft2 = _trainer(tmp_path / "ft2", data, max_steps=1, val_every=0, init=str(tmp_path / "w.safetensors"))
    got = ft2.g.state_dict()
    assert torch.equal(got["gate.alphas"], torch.ones_like(got["gate.alphas"]))
    assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith("gate."))
    # the source is recorded across a resume, and --init is ignored once the run has its own checkpoint
    ft2.run()
    again = _trainer(tmp_path / "ft2", data, max_steps=2, val_every=0, init=str(ckpt))
    assert again.step == 1 and again.resumed_from and again.initialised_from == str(tmp_path / "w.safetensors")
    # weights of another width do not fit: a typed error naming the problem
    wide = _trainer(tmp_path / "wide", data, max_steps=0, val_every=0)
    save_file({k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim else v for k, v in wide.g.state_dict().items()},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsMismatchError, match="shape"):
        _trainer(tmp_path / "bad", data, max_steps=1, val_every=0, init=str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _trainer(tmp_path / "none", data, max_steps=1, val_every=0, init=str(tmp_path / "src"))
    with pytest.raises(CheckpointError, match="no such file"):
        _trainer(tmp_path / "none", data, max_steps=1, val_every=0, init=str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        _trainer(tmp_path / "none", data, max_steps=1, val_every=0, init=str(tmp_path / "junk.safetensors"))
    # 0 steps + export: the checkpoint's EMA becomes a release folder of this model, not trained further
    res = _run(tmp_path, data, name="conv", max_steps=0, val_every=0, init=str(ckpt), export=str(tmp_path / "rel"))
    assert res.step == 0
    rel = load_file(str(tmp_path / "rel" / "model.safetensors"))
    diff = [k for k, v in src.ema.state_dict().items()  # release folders are fp16
            if not k.startswith("gate.") and not torch.equal(rel[k], v.to(rel[k].dtype))]
    assert not diff, diff[:5]


def test_lite_stage2_recipe_file_resolves():
    """zoo_configs/finetune/cfmd-gan.lite.psnr.yaml (the documented stage 2) is a valid override of the lite recipe."""
    from pathlib import Path

    from facedeblur.models import get_card
    from facedeblur.train.recipes import read_config

    path = Path(__file__).resolve().parents[1] / "zoo_configs" / "finetune" / "cfmd-gan.lite.psnr.yaml"
    r = resolve_recipe(get_card("cfmd-gan.lite").training, read_config(str(path)))
    assert r.loss.psnr == 1.0 and r.loss.psnr_floor == 1e-6 and r.to_dict()["identity_fraction"] == 0.0
    assert r.crop == 96 and r.batch == 8  # the rest of the lite recipe is kept
