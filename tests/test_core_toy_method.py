"""The generic training core with a second, toy method: a plain U-Net (task "image", "pair" samples) and an
unconditional PatchGAN D(x), registered for the test only and trained end to end by the same Trainer."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

import facedeblur
from facedeblur.cards import Capabilities, InputContract, ModelCard
from facedeblur.errors import CapabilityError, DataError
from facedeblur.models import InferenceAdapter, get_arch, list_archs, register_model, registry_scope
from facedeblur.train import methods
from facedeblur.train.losses import adversarial_bce, charbonnier
from facedeblur.train.methods import StepContext, TrainingMethod, register_method, set_requires_grad, unwrap
from facedeblur.train.recipes import RecipeError
from facedeblur.train.trainer import Trainer, TrainOptions, train
from facedeblur.train.validation import psnr

ARCH = "toy_unet"
FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}


# ------------------------------------------------------------------------------------------ the toy method


class ToyUNet(nn.Module):
    """A two-level U-Net predicting a residual: ``x + head(up(down(stem(x))) ++ stem(x))``. H, W even."""

    pad_multiple = 2

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.head = nn.Conv2d(2 * width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.stem(x))
        m = F.relu(self.mid(F.relu(self.down(e))))
        return x + self.head(torch.cat([F.relu(self.up(m)), e], dim=1))


class PatchDiscriminator(nn.Module):
    """A standard PatchGAN D(x): strided 4x4 convs + LeakyReLU(0.2), one logit per patch; unconditional."""

    def __init__(self, width: int = 8, layers: int = 2) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        cin = 3
        for i in range(layers):
            convs += [nn.Conv2d(cin, width * 2 ** i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = width * 2 ** i
        convs.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def toy_unet(**kwargs: Any) -> ToyUNet:
    return ToyUNet(**kwargs)


def patch_discriminator(**kwargs: Any) -> PatchDiscriminator:
    """The builder named at registration: the base wrapper builds D from it with the recipe's kwargs."""
    return PatchDiscriminator(**kwargs)


class ToyMethod(TrainingMethod):
    """Pixel (Charbonnier) + optional adversarial loss with an unconditional PatchGAN; D step, then G step."""

    sample_kind = "pair"
    loss_notes = "toy: Charbonnier + adv * BCE(D(G(b)), 1); D: BCE(D(s), 1) + BCE(D(G(b)), 0)"

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        b, s = batch["blurry"], batch["sharp"]
        u = self.adapter.controls(batch, ctx.device)
        assert u is None  # a "pair" method: the adapter passes no control
        with ctx.autocast():
            fake = self.adapter(ctx.g, b, u)
        parts: dict[str, torch.Tensor] = {}
        total = self.recipe.loss.pix * charbonnier(fake, s)
        parts["g_pix"] = total.detach()
        if ctx.d is not None:
            set_requires_grad(ctx.d, True)
            d_loss = adversarial_bce(ctx.d(s), True) + adversarial_bce(ctx.d(fake.detach()), False)
            ctx.backward("d", d_loss)
            parts["d_total"] = d_loss.detach()
            d_mod = unwrap(ctx.d)
            set_requires_grad(d_mod, False)
            adv = adversarial_bce(d_mod(fake), True)
            total = total + self.recipe.loss.adv * adv
            parts["g_adv"] = adv.detach()
        ctx.backward("g", total)
        parts["g_total"] = total.detach()
        return parts


@pytest.fixture
def toy():
    """Registers the toy architecture and its wrapper for one test; the registries are restored afterwards."""
    with registry_scope(), methods.registry_scope():
        register_model(ARCH, task="image", discriminator="patch_discriminator", adapter=InferenceAdapter())(toy_unet)
        register_method(ARCH)(ToyMethod)
        yield
    assert ARCH not in list_archs() and ARCH not in methods.list_methods()


def toy_card(**training: Any) -> ModelCard:
    return ModelCard(name="toy-unet.test", architecture=ARCH, task="image", description="toy U-Net for tests",
                     arch_kwargs={"width": 8},
                     input=InputContract(face_size=32, pad_multiple=2),
                     capabilities=Capabilities(continuous_u=False, aligned_face_input=False),
                     license="test", training={"recipe": "toy", "crop": 32, "batch": 2, "epoch_samples": 4,
                                               "epochs": 3, "optimizer": {"name": "adam", "lr": 1e-3,
                                                                          "betas": [0.5, 0.999]},
                                               "loss": {"adv": 0.1, "per": 0.0}, "discriminator": {"width": 4},
                                               **training})


def box_blur(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Mean over a k x k box (reflect padding), per channel."""
    pad = k // 2
    return F.avg_pool2d(F.pad(x.unsqueeze(0), (pad,) * 4, mode="reflect"), k, stride=1)[0]


class BoxBlurPairs(Dataset):
    """Random smooth 32x32 images blurred by a 5x5 box; a random flip from torch's global RNG (augmentation)."""

    kind = "pair"

    def __init__(self, n: int = 6, seed: int = 0, size: int = 32) -> None:
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
        self.sharp = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        self.sharp = (self.sharp + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
        self.blurry = torch.stack([box_blur(s) for s in self.sharp])

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b, s = self.blurry[i], self.sharp[i]
        if torch.rand(()) < 0.5:
            b, s = b.flip(-1), s.flip(-1)
        mse = ((b - s) ** 2).mean()
        return {"blurry": b.clone(), "sharp": s.clone(), "severity": (10 * torch.log10(1 / mse)).float()}


class FixedPairs(BoxBlurPairs):
    """Validation: no augmentation."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b, s = self.blurry[i], self.sharp[i]
        return {"blurry": b.clone(), "sharp": s.clone(), "severity": (10 * torch.log10(1 / ((b - s) ** 2).mean()))}


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    return BoxBlurPairs(6, seed=0), FixedPairs(3, seed=1)


def _states_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trainer(tmp_path: Path, data, name: str = "run", **opts: Any) -> Trainer:
    return Trainer(toy_card(), data[0], data[1], out_dir=tmp_path / name,
                   options=TrainOptions(**{**FAST, **opts}))


# ------------------------------------------------------------------------------------------ end to end


def test_toy_gan_trains_resumes_bit_for_bit_validates_and_exports(toy, tmp_path, data):
    straight = _trainer(tmp_path, data, "straight", max_steps=4, val_every=0, ckpt_every=0)
    assert straight.gan and isinstance(straight.d, PatchDiscriminator) and isinstance(straight.method, ToyMethod)
    d0 = {k: v.clone() for k, v in straight.d.state_dict().items()}
    res = straight.run()
    assert res.step == 4 and res.status == "max_steps"
    assert not _states_equal(d0, straight.d.state_dict())  # D was trained
    # 2 steps, a checkpoint, then 2 more from it: the same weights, optimiser state and LR as the straight run
    first = _trainer(tmp_path, data, "resumed", max_steps=2, val_every=0, ckpt_every=0)
    assert first.run().step == 2
    second = _trainer(tmp_path, data, "resumed", max_steps=4, val_every=2, ckpt_every=2)
    assert second.step == 2 and second.resumed_from
    res2 = second.run()
    assert _states_equal(straight.g.state_dict(), second.g.state_dict())
    assert _states_equal(straight.d.state_dict(), second.d.state_dict())
    assert straight.opt_d.param_groups[0]["lr"] == second.opt_d.param_groups[0]["lr"] == pytest.approx(1e-3 * .99 ** 2)
    run = tmp_path / "resumed"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in log if r["type"] in ("start", "resume")] == ["start", "resume"]
    train_log = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in train_log] == [1, 2, 3, 4]
    assert all({"g_pix", "g_adv", "d_total", "g_total"} <= set(r) for r in train_log)
    meta = json.loads((run / "run.json").read_text())
    assert meta["method"] == "ToyMethod" and meta["sample_kind"] == "pair" and meta["gan"] is True
    assert meta["loss_notes"] == ToyMethod.loss_notes and meta["task"] == "image"
    # validation table by severity bin, on the 8-bit output of the best weights (checked independently here)
    table = res2.best
    assert table["n"] == len(data[1]) and set(table["bins"]) == {"<28", "28-32", "32-36", ">=36"}
    net = ToyUNet(width=8)
    net.load_state_dict(load_file(str(run / "best.safetensors")))
    with torch.no_grad():
        val = [data[1][i] for i in range(len(data[1]))]
        outs = [torch.round(net(v["blurry"][None]).clamp(0, 1) * 255) / 255 for v in val]
    want = np.mean([psnr(o, v["sharp"][None]).item() for o, v in zip(outs, val)])
    assert table["psnr"] == pytest.approx(want, abs=1e-6)
    # export: the training record, then the folder loads through facedeblur.load and restores via the adapter
    cfg = json.loads((run / "export" / "config.json").read_text())
    assert cfg["architecture"] == ARCH and cfg["training"]["record"]["iterations"] == 4
    assert cfg["training"]["record"]["gan"] is True and cfg["metrics"]["validation"]["step"] == table["step"]
    d = facedeblur.load(f"local-dir:{run / 'export'}", device="cpu")
    assert d.adapter == InferenceAdapter() and d.card.task == "image"
    img = (np.random.default_rng(0).random((30, 34, 3)) * 255).astype(np.uint8)  # even sizes: no padding
    out = d.restore(img, faces=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = d.model(x)
    want_u8 = np.round(ref[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255)
    assert np.abs(out.astype(np.float64) - want_u8).max() <= 1  # the network's own output, as 8 bits
    assert np.abs(out.astype(np.float64) - img).max() > 1  # ... which is not the input
    with pytest.raises(CapabilityError, match="no control factor u"):
        d.restore(img, u=0.5)


def test_resume_with_a_changed_learning_rate_and_decay_uses_the_new_recipe(toy, tmp_path, data, capsys):
    first = Trainer(toy_card(), data[0], data[1], out_dir=tmp_path / "run",
                    options=TrainOptions(**{**FAST, "max_steps": 2, "val_every": 0, "ckpt_every": 0}))
    assert first.run().step == 2  # one epoch: lr 1e-3 * 0.99
    card = toy_card(optimizer={"name": "adam", "lr": 2e-3, "betas": [0.5, 0.999]}, lr_decay_per_epoch=0.9)
    second = Trainer(card, data[0], data[1], out_dir=tmp_path / "run",
                     options=TrainOptions(**{**FAST, "max_steps": 4, "val_every": 0, "ckpt_every": 0}))
    assert second.step == 2 and "continuing at lr" in capsys.readouterr().out
    for opt in (second.opt_g, second.opt_d):  # the decay so far is kept, the base rate is the new one
        assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.99)
    second.run()
    assert second.opt_g.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.99 * 0.9)  # the new decay from then on
    # an unchanged recipe restores the checkpoint's rate exactly, without a note
    third = Trainer(card, data[0], data[1], out_dir=tmp_path / "run",
                    options=TrainOptions(**{**FAST, "max_steps": 4, "val_every": 0, "ckpt_every": 0}))
    assert third.opt_g.param_groups[0]["lr"] == second.opt_g.param_groups[0]["lr"]
    assert "continuing at lr" not in capsys.readouterr().out


def test_toy_supervised_has_no_discriminator_and_learns(toy, tmp_path, data):
    tr = _trainer(tmp_path, data, max_steps=0, gan=False)
    assert not tr.gan and tr.d is None and tr.opt_d is None
    batch = torch.utils.data.default_collate([data[0][i] for i in range(4)])

    def pixel_loss() -> float:
        with torch.no_grad():
            return charbonnier(tr.g(batch["blurry"]), batch["sharp"]).item()

    before = pixel_loss()
    for _ in range(15):
        parts = tr.train_step(batch)
    assert set(parts) == {"g_pix", "g_total"}
    assert pixel_loss() < before  # a supervised step is a descent step on the pixel loss
    res = train(toy_card(), data[0], data[1], out_dir=tmp_path / "sup", max_steps=2, val_every=0, gan=False,
                export=str(tmp_path / "exported"), **FAST)
    assert res.status == "max_steps" and res.last_validation["n"] == len(data[1])
    assert load_file(str(tmp_path / "exported" / "model.safetensors")).keys() == ToyUNet(8).state_dict().keys()
    assert json.loads((tmp_path / "sup" / "run.json").read_text())["gan"] is False


def test_architecture_without_discriminator_trains_supervised(toy, tmp_path, data):
    register_model("toy_unet_plain", task="image")(lambda **kw: ToyUNet(**kw))
    register_method("toy_unet_plain")(ToyMethod)
    card = dataclasses.replace(toy_card(), name="toy-unet.plain", architecture="toy_unet_plain")
    tr = Trainer(card, data[0], data[1], out_dir=tmp_path / "run", options=TrainOptions(**{**FAST, "max_steps": 1}))
    assert not tr.method.has_discriminator and not tr.gan and tr.d is None  # GAN asked for (default), no D
    assert tr.adapter == InferenceAdapter()  # the task's default adapter
    with pytest.raises(RecipeError, match="no discriminator"):
        tr.method.build_discriminator()
    assert tr.run().status == "max_steps"


def test_toy_ema_and_no_gan_when_adv_weight_is_zero(toy, tmp_path, data):
    tr = Trainer(toy_card(ema=0.5, loss={"adv": 0.0, "per": 0.0}), data[0], data[1], out_dir=tmp_path / "run",
                 options=TrainOptions(**{**FAST, "max_steps": 2, "val_every": 0}))
    assert not tr.gan and tr.ema is not None
    tr.run()
    assert not _states_equal(tr.ema.state_dict(), tr.g.state_dict())
    assert _states_equal(load_file(str(tmp_path / "run" / "best.safetensors")), tr.ema.state_dict())


# ------------------------------------------------------------------------------------------ contracts


class _Clips(Dataset):
    kind = "clip"

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blurry": torch.zeros(3, 3, 8, 8), "sharp": torch.zeros(3, 3, 8, 8)}


class _NoSharp(BoxBlurPairs):
    """Declares "pair" but its items have no sharp image."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blurry": self.blurry[i]}


def test_dataset_kind_is_checked_against_the_wrapper(toy, tmp_path, data):
    with pytest.raises(DataError, match="trains on 'pair' samples.*gives 'clip' samples"):
        _trainer(tmp_path, (_Clips(), data[1]))
    with pytest.raises(DataError, match="validation dataset"):
        _trainer(tmp_path, (data[0], _Clips()))
    # CFMD-GAN consumes moments; pairs carry no u
    with pytest.raises(DataError, match="'moments' samples.*gives 'pair' samples"):
        Trainer("cfmd-gan.lite", data[0], None, out_dir=tmp_path / "cfmd",
                arch_overrides={"width": 4, "num_res": 1}, options=TrainOptions(**FAST))
    # the first batch is checked against the kind's keys
    with pytest.raises(DataError, match="training batch.*missing \\['sharp'\\]"):
        train(toy_card(), _NoSharp(4), data[1], out_dir=tmp_path / "nosharp", max_steps=1, val_every=0, **FAST)


def test_wrapper_registry_errors_and_init_options(toy, tmp_path, data):
    with pytest.raises(CapabilityError, match="no training wrapper.*register_method"):
        methods.get_method("no_such_arch")
    with pytest.raises(ValueError, match="two training wrappers"):
        register_method(ARCH)(type("Other", (ToyMethod,), {}))
    with pytest.raises(TypeError, match="TrainingMethod subclasses"):
        register_method("x")(object)
    with pytest.raises(DataError, match="unknown sample kind"):
        register_method("x")(type("Bad", (ToyMethod,), {"sample_kind": "triplets"}))
    # the recipe's init options belong to wrappers that implement them (CFMD-GAN's); the base refuses them
    with pytest.raises(RecipeError, match="zero_init_output.*no such initialisation"):
        Trainer(toy_card(zero_init_output=True), data[0], data[1], out_dir=tmp_path / "z", options=TrainOptions(**FAST))
    with pytest.raises(CapabilityError, match="channels_last is a CUDA option"):
        _trainer(tmp_path, data, channels_last=True, device="cpu")
    assert get_arch(ARCH).adapter == InferenceAdapter()


def test_generic_modules_name_no_method():
    """The training core knows nothing of a method: no CFMD name in its modules (docstrings included)."""
    root = Path(facedeblur.__file__).parent / "train"
    generic = ["trainer.py", "validation.py", "recipes.py", "checkpoint.py", "distributed.py", "losses.py",
               "methods/base.py"]
    found = {name: [i + 1 for i, line in enumerate((root / name).read_text().splitlines())
                    if re.search("cfmd", line, re.IGNORECASE)] for name in generic}
    assert not {k: v for k, v in found.items() if v}, found
    assert re.search("cfmd", (root / "methods" / "cfmd_gan.py").read_text(), re.IGNORECASE)  # the check can fail


# ------------------------------------------------------------------------------------------ a clip method


class ToyClipNet(nn.Module):
    """(N, T, 3, H, W) frames -> the centre frame plus a learned residual of the frames' mean (no resampling)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 5 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0  # padded to the card's multiple
        return x[:, x.shape[1] // 2] + self.body(x.mean(dim=1))


class ToyClipMethod(TrainingMethod):
    """Charbonnier between the restored centre frame and the sharp centre frame of a clip."""

    sample_kind = "clip"

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        b, s = batch["blurry"], batch["sharp"]
        loss = charbonnier(self.adapter(ctx.g, b, None), s[:, s.shape[1] // 2])
        ctx.backward("g", loss)
        return {"g_pix": loss.detach(), "g_total": loss.detach()}


class BlurredClips(Dataset):
    """T = 3 frames of content moving 1 px per frame, each box-blurred: 16 x 18, or with ``odd`` 15 x 17 (which
    validation must pad to the card's multiple of 2)."""

    kind = "clip"

    def __init__(self, n: int, seed: int, odd: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        h, w = (15, 17) if odd else (16, 18)
        base = F.avg_pool2d(torch.rand(n, 3, h + 4, w + 2, generator=g), 3, stride=1)  # smooth, (h + 2) x w
        self.sharp = torch.stack([torch.stack([b[:, t:t + h, :] for t in range(3)]) for b in base])
        self.blurry = torch.stack([torch.stack([box_blur(f, 3) for f in clip]) for clip in self.sharp])

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blurry": self.blurry[i].clone(), "sharp": self.sharp[i].clone()}


def test_a_clip_method_trains_and_validates_on_its_centre_frames(tmp_path):
    with registry_scope(), methods.registry_scope():
        register_model("toy_clip", task="video", adapter=InferenceAdapter())(lambda **kw: ToyClipNet(**kw))
        register_method("toy_clip")(ToyClipMethod)
        card = ModelCard(name="toy-clip.test", architecture="toy_clip", task="video", description="toy clip net",
                         arch_kwargs={"width": 4}, input=InputContract(face_size=16, pad_multiple=2),
                         capabilities=Capabilities(frame_window=3, aligned_face_input=False), license="test",
                         training={"recipe": "toy", "crop": 16, "batch": 2, "epoch_samples": 4, "epochs": 2,
                                   "optimizer": {"name": "adam", "lr": 1e-2}, "loss": {"adv": 0.0, "per": 0.0}})
        val = BlurredClips(3, seed=1, odd=True)
        tr = Trainer(card, BlurredClips(4, seed=0), val, out_dir=tmp_path / "clip",
                     options=TrainOptions(**{**FAST, "max_steps": 4, "val_every": 0, "gan": False}))
        res = tr.run()
    table = res.last_validation
    assert res.status == "finished" and table["n"] == 3
    # the table scores the 8-bit centre frame of the output, and the baseline is the blurry centre frame
    with torch.no_grad():
        outs = [torch.round(tr._eval_model()(F.pad(val[i]["blurry"], (0, 1, 0, 1), mode="replicate")[None])
                            [..., :15, :17].clamp(0, 1) * 255) / 255 for i in range(3)]
    want = np.mean([psnr(o, val[i]["sharp"][1][None]).item() for i, o in enumerate(outs)])
    base = np.mean([psnr(val[i]["blurry"][1][None], val[i]["sharp"][1][None]).item() for i in range(3)])
    assert table["psnr"] == pytest.approx(want, abs=1e-6) and table["psnr_blurry"] == pytest.approx(base, abs=1e-6)


def test_an_unpaired_method_must_say_how_it_validates():
    class Unpaired(ToyMethod):
        sample_kind = "unpaired"

    m = Unpaired.__new__(Unpaired)
    with pytest.raises(RecipeError, match="no ground truth to validate on"):
        m.validation_views({"sharp": torch.zeros(1, 3, 4, 4), "real_blurry": torch.zeros(1, 3, 4, 4)})
