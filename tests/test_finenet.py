"""FineNet (issue #15): shapes and input contract, the deformable alignment recovering a shift (set analytically and
learned), FOC with and without landmarks, landmark heatmaps, reflected windows at clip ends (Deblurrer and the face
pipeline / CLI), and short training runs through the generic trainer. Random weights are used for mechanics only."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import facedeblur
from facedeblur.cards import Capabilities, InputContract, ModelCard
from facedeblur.errors import InputError
from facedeblur.models import get_card, param_count
from facedeblur.models.finenet import (MTCNN_FROM_68, DCNPack, FineNet, PCDAlign, landmark_heatmaps,
                                       modulated_deform_conv)
from facedeblur.models.layers import deform_conv2d_reference
from facedeblur.restore import Deblurrer
from facedeblur.train.methods.finenet import FineNetMethod, branch_loss, gradient_l1
from facedeblur.train.recipes import RecipeError
from facedeblur.train.trainer import Trainer, TrainOptions

TINY = {"width": 8, "deform_groups": 2, "extract_blocks": 1, "recon_blocks": 1, "predeblur": False, "tsa": True,
        "heatmap_channels": 5, "heatmap_width": 4, "combine_width": 4, "combine_blocks": 1}
FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}


def tiny(seed: int = 0, **kw: Any) -> FineNet:
    torch.manual_seed(seed)
    return FineNet(**{**TINY, **kw})


def lite(seed: int = 0) -> FineNet:
    """finenet.lite's network with random weights (mechanics only)."""
    torch.manual_seed(seed)
    return FineNet(**get_card("finenet.lite").arch_kwargs)


def perturb_offsets_(net: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """Give every zero-initialised DCN offset conv small random weights, so that offsets depend on the FOCs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DCNPack):
                m.offset.weight.copy_(torch.randn(m.offset.weight.shape, generator=g) * scale)


def smooth(x: torch.Tensor, passes: int = 3) -> torch.Tensor:
    for _ in range(passes):
        x = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    return x


# ------------------------------------------------------------------------------------------------ shapes


def test_shapes_branches_and_input_contract():
    net = tiny()
    x = torch.rand(2, 5, 3, 32, 48)
    with torch.no_grad():
        y, outs = net(x, return_branches=True)
        assert y.shape == (2, 3, 32, 48) and set(outs) == {"enhancement", "interpolation"}
        assert all(o.shape == (2, 3, 32, 48) for o in outs.values())
        # the combination module starts as the mean of the two branches (zero-initialised output conv)
        torch.testing.assert_close(y, 0.5 * (outs["enhancement"] + outs["interpolation"]))
        # interpolation treats the centre frame as missing (§3.4): changing it changes only the enhancement branch
        x2 = x.clone()
        x2[:, 2] = torch.rand_like(x2[:, 2])
        _, outs2 = net(x2, return_branches=True)
        torch.testing.assert_close(outs2["interpolation"], outs["interpolation"])
        assert (outs2["enhancement"] - outs["enhancement"]).abs().max() > 1e-3
        # heatmaps at the input resolution are averaged down to the feature resolution
        hm = torch.rand(2, 5, 5, 32, 48)
        torch.testing.assert_close(net(x, hm), net(x, F.avg_pool2d(hm.flatten(0, 1), 4).view(2, 5, 5, 8, 12)))
    assert net.pad_multiple == 16 and net.frames == 5
    for bad in (torch.rand(2, 3, 32, 32), torch.rand(1, 3, 3, 32, 32), torch.rand(1, 5, 1, 32, 32),
                torch.rand(1, 5, 3, 24, 32), np.zeros((1, 5, 3, 32, 32))):
        with pytest.raises(InputError):
            net(bad)
    with pytest.raises(InputError, match="heatmaps must be"):
        net(x, torch.rand(2, 5, 68, 8, 12))
    with pytest.raises(InputError, match="feature resolution"):
        net(x, torch.rand(2, 5, 5, 16, 24))
    for kw in ({"width": 10, "deform_groups": 4}, {"branches": ()}, {"branches": ("enhancement", "deblur")}):
        with pytest.raises(ValueError):
            FineNet(**{**TINY, **kw})
    # one branch alone (the Table 3 ablation): that branch is the output, no combination module
    enh = tiny(branches=["enhancement"])
    assert enh.interpolation is None and enh.combine is None
    with torch.no_grad():
        y, outs = enh(x, return_branches=True)
    assert set(outs) == {"enhancement"} and torch.equal(y, outs["enhancement"])


def test_parameter_counts_of_the_zoo_variants():
    counts = {n: param_count(get_card(n)) for n in ("finenet.paper", "finenet.lite")}
    assert counts == {"finenet.paper": 63_586_825, "finenet.lite": 1_999_161}
    with torch.device("meta"):
        paper = FineNet(**get_card("finenet.paper").arch_kwargs)
    parts = {k: sum(p.numel() for p in getattr(paper, k).parameters())
             for k in ("enhancement", "interpolation", "combine")}
    assert parts == {"enhancement": 26_344_099, "interpolation": 25_855_139, "combine": 11_387_587}
    # EDVR-L deblur sizes (REFERENCE_FACTS §4.1): 128 channels, 8 deformable groups, 5 + 40 blocks
    assert paper.enhancement.align.dcn1.weight.shape == (128, 128, 3, 3)
    assert paper.enhancement.align.dcn1.offset.out_channels == 3 * 8 * 9
    assert len(paper.enhancement.features.body) == 5 and len(paper.enhancement.recon.body) == 40
    assert len(paper.combine.blocks) == 9  # §3.5: nine ResNet blocks


# ------------------------------------------------------------------------------------------------ alignment


def test_grouped_deformable_conv_matches_the_dcnv2_formula_per_group():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 4, 6, 7, generator=g, dtype=torch.float64)
    off = torch.randn(1, 2 * 2 * 9, 6, 7, generator=g, dtype=torch.float64) * 1.5
    mask = torch.rand(1, 2 * 9, 6, 7, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    got = modulated_deform_conv(x, off, mask, w, b, groups=2)
    # group g: input channels 2g, 2g+1 sampled with offsets [18g, 18g+18) and masks [9g, 9g+9)
    want = sum(deform_conv2d_reference(x[:, 2 * i:2 * i + 2], off[:, 18 * i:18 * i + 18], w[:, 2 * i:2 * i + 2],
                                       mask[:, 9 * i:9 * i + 9]) for i in range(2)) + b.view(1, -1, 1, 1)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="deformable groups"):
        modulated_deform_conv(x, off, mask, w, b, groups=3)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision is not installed (optional); its grouped deform_conv2d is the CUDA path")
def test_grouped_layout_matches_torchvision():
    """On CUDA the groups go to torchvision in one call: its offset-group layout must be ours (checked on CPU)."""
    from facedeblur.models.layers import _torchvision_deform

    tv = _torchvision_deform()
    if tv is None:
        pytest.skip("torchvision is installed but torchvision.ops is not importable")
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.rand(2, 8, 9, 10, generator=g), torch.randn(6, 8, 3, 3, generator=g), torch.randn(6, generator=g)
    off = torch.randn(2, 2 * 4 * 9, 9, 10, generator=g) * 2
    mask = torch.rand(2, 4 * 9, 9, 10, generator=g)
    torch.testing.assert_close(modulated_deform_conv(x, off, mask, w, b, groups=4),
                               tv(x, off, w, b, stride=1, padding=1, dilation=1, mask=mask), atol=1e-4, rtol=1e-4)


def _set_shift_(pack: DCNPack, dy: float, dx: float) -> None:
    """Offsets = (dy, dx) at every location and kernel tap (weights zero, bias set), mask ~ 1, identity centre tap."""
    k, gr = pack.k, pack.groups
    with torch.no_grad():
        pack.offset.weight.zero_()
        bias = torch.zeros(3 * gr * k)
        bias[0:2 * gr * k:2] = dy
        bias[1:2 * gr * k:2] = dx
        bias[2 * gr * k:] = 40.0  # sigmoid -> 1
        pack.offset.bias.copy_(bias)
        c = pack.weight.shape[0]
        pack.weight.zero_()
        pack.weight[torch.arange(c), torch.arange(c), 1, 1] = 1.0
        pack.bias.zero_()


def test_pcd_alignment_of_an_integer_shifted_frame_recovers_the_centre_features():
    """Offsets set analytically to the shift at each level (4, 2, 1 px down the pyramid): every level's DCN output and
    the cascade's output equal the reference frame's features away from the border; with zero offsets they do not."""
    torch.manual_seed(0)
    c = 4
    align = PCDAlign(c, groups=2)
    sizes, shifts = [(32, 32), (16, 16), (8, 8)], [(4, -4), (2, -2), (1, -1)]
    ref = [smooth(torch.rand(1, c, *s), 1) + 0.1 for s in sizes]  # positive: the LeakyReLUs pass them unchanged
    nbr = [torch.roll(f, shifts=sh, dims=(2, 3)) for f, sh in zip(ref, shifts)]  # nbr(p) = ref(p - s)
    for pack, (dy, dx) in zip((align.dcn1, align.dcn2, align.dcn3), shifts):
        _set_shift_(pack, dy, dx)
    _set_shift_(align.cas_dcn, 0.0, 0.0)
    with torch.no_grad():  # Level 1's fusion conv passes its DCN result (the upsampled coarser result gets weight 0)
        align.fuse1.weight.zero_()
        align.fuse1.weight[torch.arange(c), torch.arange(c), 1, 1] = 1.0
        align.fuse1.bias.zero_()
    seen: dict[str, torch.Tensor] = {}
    for name in ("dcn1", "dcn2", "dcn3"):
        getattr(align, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        out = align(nbr, ref)
    for level, name in enumerate(("dcn1", "dcn2", "dcn3")):
        m = max(abs(v) for v in shifts[level]) + 1
        inner = (slice(None), slice(None), slice(m, -m), slice(m, -m))
        err = (seen[name] - ref[level])[inner].abs().max().item()
        assert err < 1e-5, (name, err)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (out - ref[0])[inner].abs().max() < 1e-5
    assert (nbr[0] - ref[0])[inner].abs().mean() > 0.01  # the shift is visible without alignment
    _set_shift_(align.dcn1, 0.0, 0.0)
    with torch.no_grad():
        assert (align(nbr, ref) - ref[0])[inner].abs().mean() > 0.01  # zero offsets do not align


def test_a_dcn_pack_learns_the_shift_of_a_shifted_frame():
    """Measured: a few Adam steps on a DCN pack's offset conv (identity kernel) recover an integer shift (2, -1)."""
    torch.manual_seed(0)
    ref = smooth(torch.rand(1, 4, 40, 40))
    ref = (ref - ref.mean()) / ref.std()
    nbr = torch.roll(ref, shifts=(2, -1), dims=(2, 3))
    pack = DCNPack(4, groups=1, offset_channels=8)
    _set_shift_(pack, 0.0, 0.0)
    with torch.no_grad():
        pack.offset.bias[18:] = 4.0
    pack.weight.requires_grad_(False)
    pack.bias.requires_grad_(False)
    opt = torch.optim.Adam([pack.offset.weight, pack.offset.bias], lr=0.05)
    feat = torch.cat([nbr, ref], dim=1)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    losses = []
    for _ in range(80):
        loss = ((pack(nbr, feat) - ref)[inner] ** 2).mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    off, _ = pack.offsets(feat)
    centre_tap = off.detach()[inner][:, 8:10]  # kernel location 4 (the only non-zero weight): (dy, dx)
    assert centre_tap[:, 0].mean().item() == pytest.approx(2.0, abs=0.15)
    assert centre_tap[:, 1].mean().item() == pytest.approx(-1.0, abs=0.15)
    assert losses[-1] < 0.02 * losses[0]


# ------------------------------------------------------------------------------------------------ landmarks


def test_foc_with_and_without_landmarks():
    net = tiny()
    perturb_offsets_(net, 1.0)
    x = torch.rand(1, 5, 3, 32, 32)
    pts = torch.tensor([[10.0, 12], [22, 12], [16, 17], [11, 23], [21, 23]])
    moving = torch.stack([pts + torch.tensor([t - 2.0, 0.5 * t]) for t in range(5)])[None]  # (1, 5, 5, 2)
    hm = net.heatmaps_from_landmarks(moving, (32, 32))
    assert hm.shape == (1, 5, 5, 8, 8)
    seen: dict[tuple[str, str], list[torch.Tensor]] = {}
    for branch, pyr in (("enhancement", net.enhancement.align), ("interpolation", net.interpolation.interp)):
        for name, mod in (("foc3", pyr.foc3), ("foc2", pyr.foc2), ("offsets1", pyr.dcn1.offset)):
            mod.register_forward_hook(lambda m, i, o, key=(branch, name): seen.setdefault(key, []).append(o))
    with torch.no_grad():
        none = net(x)
        torch.testing.assert_close(net(x, torch.zeros_like(hm)), none, rtol=0, atol=0)  # None = zero heatmaps
        failed = net(x, net.heatmaps_from_landmarks(torch.full_like(moving, float("nan")), (32, 32)))
        torch.testing.assert_close(failed, none, rtol=0, atol=0)  # failed detections fall back to zero heatmaps
        seen.clear()
        net(x)
        net(x, hm)
    for branch in ("enhancement", "interpolation"):
        # the landmark prior moves the top level's offsets (Eq. 7) and nothing below it (Eq. 3, 5)
        without, with_lm = seen[(branch, "offsets1")]
        assert (with_lm - without).abs().max() > 1e-3, branch
        for name in ("foc3", "foc2"):
            assert torch.equal(*seen[(branch, name)]), (branch, name)
    # only the top level's FOC sees heatmaps (Eq. 7); the lower levels use the simplified FOC (Eq. 3, 5)
    c, hw = TINY["width"], TINY["heatmap_width"]
    enh, itp = net.enhancement.align, net.interpolation.interp
    assert enh.foc1.inp.in_channels == 2 * c + 2 * hw and itp.foc1.inp.in_channels == 2 * c + 3 * hw
    assert enh.foc2.inp.in_channels == 2 * c and enh.foc3.inp.in_channels == 2 * c
    assert itp.foc2.inp.in_channels == 2 * c and itp.foc3.inp.in_channels == 3 * c
    assert len(enh.foc1.down) == 2 and len(enh.foc2.down) == len(enh.foc3.down) == 1
    # no landmark input at all: the simplified FOC everywhere
    plain = tiny(heatmap_channels=0)
    assert plain.enhancement.heat is None and plain.enhancement.align.foc1.inp.in_channels == 2 * c
    with torch.no_grad():
        assert plain(x).shape == (1, 3, 32, 32)
    with pytest.raises(InputError, match="no landmark input"):
        plain(x, hm)


def test_heatmaps_from_68_and_5_points():
    rng = np.random.default_rng(0)
    pts68 = rng.integers(4, 60, size=(68, 2)).astype(np.float64) * 4 + 1.5  # on heatmap pixel centres at scale 1/4
    hm = landmark_heatmaps(pts68, (64, 64), sigma=1.0, scale=0.25)
    assert hm.shape == (68, 64, 64) and hm.dtype == torch.float32
    q = (pts68 + 0.5) * 0.25 - 0.5
    for i in (0, 30, 36, 67):
        r, col = divmod(int(hm[i].argmax()), 64)
        assert (col, r) == (round(q[i, 0]), round(q[i, 1])) and hm[i].max() == pytest.approx(1.0)
        d2 = (col + 1 - q[i, 0]) ** 2 + (r - q[i, 1]) ** 2  # one pixel to the right: exp(-d^2 / (2 sigma^2))
        assert hm[i, r, col + 1].item() == pytest.approx(math.exp(-d2 / 2), rel=1e-5)
    # 68 points -> the 5 MTCNN points: eye centres, nose tip, mouth corners
    five = landmark_heatmaps(pts68, (64, 64), sigma=1.0, channels=5, scale=0.25)
    assert five.shape == (5, 64, 64)
    want = (np.mean(pts68[list(MTCNN_FROM_68[0])], axis=0) + 0.5) * 0.25 - 0.5
    r, col = divmod(int(five[0].argmax()), 64)
    assert abs(col - want[0]) <= 0.5 and abs(r - want[1]) <= 0.5
    torch.testing.assert_close(five[2], hm[30])
    # 5 points (MTCNN), batched, with a failed frame (NaN): its channels are zero
    pts5 = torch.tensor([[8.0, 8], [20, 8], [14, 14], [9, 20], [19, 20]]).expand(2, 3, 5, 2).clone()
    pts5[1, 2] = float("nan")
    maps = landmark_heatmaps(pts5, (32, 32), sigma=1.5)
    assert maps.shape == (2, 3, 5, 32, 32) and maps[1, 2].abs().max() == 0 and maps[1, 1].max() == pytest.approx(1.0)
    with pytest.raises(InputError, match="5-point detector"):
        landmark_heatmaps(pts5, (32, 32), channels=68)
    with pytest.raises(InputError):
        landmark_heatmaps(torch.zeros(5, 3), (32, 32))


# ------------------------------------------------------------------------------------------------ video windows


def test_restore_video_reflects_windows_at_the_clip_ends():
    """A random-init finenet.lite through Deblurrer.restore_video: frame 0 is restored from frames [2, 1, 0, 1, 2],
    the last from [n-3, n-2, n-1, n-2, n-3], lazily (a bounded window of frames held)."""
    net = lite()
    perturb_offsets_(net, 0.02)
    d = Deblurrer(net, get_card("finenet.lite"))
    rng = np.random.default_rng(0)
    frames = [rng.random((32, 32, 3)).astype(np.float32) for _ in range(7)]
    consumed = []

    def stream():
        for i, f in enumerate(frames):
            consumed.append(i)
            yield f

    gen = d.restore_video(stream(), batch_size=2, progress=False)
    first = next(gen)
    assert len(consumed) <= 2 + 5  # one batch plus the look-ahead, not the whole clip
    outs = [first, *gen]
    assert len(outs) == 7 and outs[0].shape == (32, 32, 3)

    def direct(idx: list[int]) -> np.ndarray:
        x = torch.from_numpy(np.stack([frames[i] for i in idx])).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            return net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()

    np.testing.assert_allclose(outs[0], direct([2, 1, 0, 1, 2]), atol=1e-5)
    np.testing.assert_allclose(outs[1], direct([1, 0, 1, 2, 3]), atol=1e-5)
    np.testing.assert_allclose(outs[3], direct([1, 2, 3, 4, 5]), atol=1e-5)
    np.testing.assert_allclose(outs[6], direct([4, 5, 6, 5, 4]), atol=1e-5)
    assert np.abs(outs[0] - direct([0, 0, 0, 1, 2])).max() > 1e-4  # not edge replication
    short = list(d.restore_video(frames[:2], progress=False))  # a clip shorter than the window: periodic reflection
    np.testing.assert_allclose(short[0], direct([0, 1, 0, 1, 0]), atol=1e-5)


class _Recorder(torch.nn.Module):
    """Wraps a network and records the shapes of the windows it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def test_face_pipeline_and_cli_restore_a_clip_with_finenet(tmp_path, capsys, monkeypatch):
    """``facedeblur restore clip.avi --model local-dir:...`` with a random-init finenet.lite (a 64 px face card):
    frame count, fps and size kept; the Deblurrer's face restorer hands the network (N, 5, 3, 64, 64) windows."""
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    from facedeblur.faces import video as fv
    from facedeblur.restore import restore_video_file
    from facedeblur.weights.export import save_pretrained
    from tinymodels import run_cli

    astro = skimage_data.astronaut()
    bg = np.ascontiguousarray(cv2.resize(astro[300:512], (160, 112), interpolation=cv2.INTER_AREA))
    face = cv2.resize(astro[0:240, 100:340], (72, 72), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(6):
        f = bg.copy()
        f[20:92, 10 + 3 * i:82 + 3 * i] = face
        frames.append(f)
    src = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"FFV1"), 12.0, (160, 112))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    base = get_card("finenet.lite")
    card = dataclasses.replace(base, input=dataclasses.replace(base.input, face_size=64))
    net = lite()
    rec = _Recorder(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fv.AudioNotCopiedWarning)
        res = restore_video_file(src, tmp_path / "direct.avi", Deblurrer(rec, card), progress=False, codec="FFV1",
                                 batch_size=4)
    assert res.frames == 6 and res.frames_with_faces == 6 and (res.width, res.height) == (160, 112)
    assert rec.shapes and all(s[1:] == (5, 3, 64, 64) for s in rec.shapes)
    assert sum(s[0] for s in rec.shapes) == 6  # one window per face per frame
    # the command line, offline, from a saved folder
    folder = save_pretrained(net, card, tmp_path / "finenet-random")
    monkeypatch.setattr(fv, "_find_ffmpeg", lambda: None)
    rc, _, err = run_cli(["restore", str(src), "-o", str(tmp_path / "cli.avi"), "--model", f"local-dir:{folder}",
                          "--codec", "FFV1"], capsys)
    assert rc == 0, err
    cap = cv2.VideoCapture(str(tmp_path / "cli.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    fps, size = cap.get(cv2.CAP_PROP_FPS), (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert n == 6 and fps == pytest.approx(12.0) and size == (160, 112)


# ------------------------------------------------------------------------------------------------ training


class MovingClips(Dataset):
    """5-frame clips of smooth content moving 1 px per frame, each box-blurred; 32 x 32; optional landmarks."""

    kind = "clip"

    def __init__(self, n: int, seed: int, landmarks: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        base = smooth(torch.rand(n, 3, 40, 40, generator=g), 1)
        self.sharp = torch.stack([torch.stack([b[:, t:t + 32, t:t + 32] for t in range(5)]) for b in base])
        self.blurry = F.avg_pool2d(F.pad(self.sharp.flatten(0, 1), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        self.blurry = self.blurry.view_as(self.sharp)
        self.landmarks = landmarks

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"blurry": self.blurry[i].clone(), "sharp": self.sharp[i].clone()}
        if self.landmarks:
            pts = torch.tensor([[10.0, 12], [22, 12], [16, 17], [11, 23], [21, 23]])
            item["landmarks"] = torch.stack([pts - t for t in range(5)])
        return item


def tiny_card(**training: Any) -> ModelCard:
    base = get_card("finenet.lite")
    return dataclasses.replace(base, name="finenet.test", arch_kwargs={**TINY, "branches": ["enhancement",
                                                                                           "interpolation"]},
                               input=InputContract(face_size=32, pad_multiple=16),
                               capabilities=Capabilities(frame_window=5),
                               training={**base.training, "crop": 32, "batch": 2, "epoch_samples": 4, "epochs": 1,
                                         **training})


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_two_training_steps_through_the_generic_trainer_then_the_combination_stage(tmp_path):
    train, val = MovingClips(4, seed=0), MovingClips(2, seed=1)
    tr = Trainer(tiny_card(), train, val, out_dir=tmp_path / "branches",
                 options=TrainOptions(**{**FAST, "max_steps": 2, "val_every": 0, "ckpt_every": 0}))
    assert isinstance(tr.method, FineNetMethod) and not tr.gan and tr.d is None
    comb0, enh0 = _states(tr.g.combine), _states(tr.g.enhancement)
    assert not any(p.requires_grad for p in tr.g.combine.parameters())  # stage "branches": combination frozen
    res = tr.run()
    assert res.step == 2 and res.last_validation["n"] == 2
    log = [json.loads(line) for line in (tmp_path / "branches" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in steps] == [1, 2] and all({"g_enh", "g_int", "g_total"} <= set(r) for r in steps)
    assert all("g_comb" not in r for r in steps)
    assert json.loads((tmp_path / "branches" / "run.json").read_text())["sample_kind"] == "clip"
    assert all(torch.equal(v, tr.g.combine.state_dict()[k]) for k, v in comb0.items())
    assert any(not torch.equal(v, tr.g.enhancement.state_dict()[k]) for k, v in enh0.items())
    # stage 2 (§3.6): the combination module on the L1 loss, the branches frozen, started from stage 1's weights
    card2 = tiny_card(method={"stage": "combine"})
    tr2 = Trainer(card2, train, val, out_dir=tmp_path / "combine",
                  options=TrainOptions(**{**FAST, "max_steps": 1, "val_every": 0, "ckpt_every": 0,
                                          "init": str(tmp_path / "branches")}))
    enh1, comb1 = _states(tr2.g.enhancement), _states(tr2.g.combine)
    assert all(torch.equal(v, tr.g.enhancement.state_dict()[k]) for k, v in enh1.items())  # --init loaded them
    tr2.run()
    assert all(torch.equal(v, tr2.g.enhancement.state_dict()[k]) for k, v in enh1.items())
    assert any(not torch.equal(v, tr2.g.combine.state_dict()[k]) for k, v in comb1.items())
    last = [json.loads(line) for line in (tmp_path / "combine" / "log.jsonl").read_text().splitlines()]
    assert [set(r) >= {"g_comb"} for r in last if r["type"] == "train"] == [True]


def test_facedeblur_train_asks_the_data_engine_for_clips(tmp_path, monkeypatch):
    """``facedeblur train finenet.lite``: the CLI asks ``build_datasets`` for clip data (FineNet's sample kind) and
    trains one step on it."""
    import argparse

    import facedeblur.data as data_mod
    from facedeblur.train.cli import add_train_arguments, run_from_args

    seen: dict[str, Any] = {}

    def fake_build(data_dir, card, *, seed=0, cache_dir=None, progress=True, kind="moments"):
        seen["kind"], seen["frames"] = kind, card.capabilities.frame_window
        return MovingClips(2, seed=0), MovingClips(1, seed=1)

    monkeypatch.setattr(data_mod, "build_datasets", fake_build, raising=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("training:\n  epoch_samples: 2\n")
    args = add_train_arguments(argparse.ArgumentParser()).parse_args(
        ["finenet.lite", "--data", str(tmp_path), "--config", str(cfg), "--out", str(tmp_path / "runs"), "--batch", "2",
         "--crop", "32", "--max-steps", "1", "--workers", "0", "--threads", "1", "--no-progress", "--val-every", "0"])
    assert run_from_args(args) == 0
    assert seen == {"kind": "clip", "frames": 5}
    meta = json.loads((tmp_path / "runs" / "finenet.lite" / "run.json").read_text())
    assert meta["sample_kind"] == "clip" and meta["step"] == 1 and meta["recipe"]["method"]["stage"] == "branches"


def test_training_with_landmarks_and_recipe_checks(tmp_path):
    card = tiny_card(method={"stage": "joint", "landmarks": "batch", "landmark_dropout": 0.0})
    tr = Trainer(card, MovingClips(2, seed=0, landmarks=True), None, out_dir=tmp_path / "lm",
                 options=TrainOptions(**{**FAST, "max_steps": 1, "val_every": 0, "ckpt_every": 0}))
    batch = torch.utils.data.default_collate([tr.train_ds[i] for i in range(2)])
    hm = tr.method.heatmaps(batch, tr.g, batch["blurry"])
    assert hm.shape == (2, 5, 5, 8, 8) and hm.amax() > 0.9
    parts = tr.train_step(batch)
    assert {"g_enh", "g_int", "g_comb", "g_total"} <= set(parts)
    tr.method.options["landmark_dropout"] = 1.0
    assert tr.method.heatmaps(batch, tr.g, batch["blurry"]).abs().max() == 0  # every sample dropped
    for method, match in (({"stage": "pretrain"}, "stage must be one of"), ({"lr": 1}, "unknown keys"),
                          ({"landmarks": "dlib"}, "landmarks must be"), ({"landmark_dropout": 2}, "<= 1")):
        with pytest.raises(RecipeError, match=match):
            Trainer(tiny_card(method=method), MovingClips(2, 0), None, out_dir=tmp_path / "bad",
                    options=TrainOptions(**FAST))
    one = dataclasses.replace(tiny_card(method={"stage": "combine"}),
                              arch_kwargs={**TINY, "branches": ["interpolation"]})
    with pytest.raises(RecipeError, match="combination module"):
        Trainer(one, MovingClips(2, 0), None, out_dir=tmp_path / "one", options=TrainOptions(**FAST))
    with pytest.raises(facedeblur.DataError, match="landmarks"):
        tr.method.heatmaps({"blurry": batch["blurry"]}, tr.g, batch["blurry"])


def test_branch_losses_are_eq_9_and_10():
    g = torch.Generator().manual_seed(0)
    p, t = torch.rand(2, 3, 8, 9, generator=g), torch.rand(2, 3, 8, 9, generator=g)
    gx = lambda a: a[..., 1:] - a[..., :-1]  # noqa: E731
    gy = lambda a: a[..., 1:, :] - a[..., :-1, :]  # noqa: E731
    want = (t - p).abs().mean() + (gx(t) - gx(p)).abs().mean() + (gy(t) - gy(p)).abs().mean()
    torch.testing.assert_close(branch_loss(p, t), want)
    torch.testing.assert_close(gradient_l1(p + 0.3, p), torch.tensor(0.0))  # a constant offset has no gradient
    torch.testing.assert_close(branch_loss(p, t, grad=0.0), (t - p).abs().mean())


def test_finenet_has_no_weights_yet_and_refuses_random_ones():
    assert facedeblur.list_models("finenet") == ["finenet.lite", "finenet.paper"]
    for name in ("finenet.lite", "finenet.paper"):
        card = facedeblur.model_info(name)
        assert card.task == "video" and card.capabilities.frame_window == 5 and card.input.pad_multiple == 16
        assert not card.weights.available and not card.default
        with pytest.raises(facedeblur.WeightsNotAvailableError):
            facedeblur.load(name, device="cpu")
