"""SDEdit (paper 3.3.2): the samplers' math with an exact oracle denoiser, the mask rule, seeds,
the edit mask and paste-back, and model loading with a tiny UNet saved in diffusers' formats.

No pretrained diffusion weights are reachable here: the math is tested with an oracle whose
noise prediction is exact for a known clean image, the wiring with a tiny random UNet2DModel.
"""
import json

import numpy as np
import pytest
import torch

from hairtryon import refinement as rf
from conftest import fake_hub_cache, tiny_unet
from hairtryon.errors import HairTryOnError, WeightsError
from hairtryon.segmentation import BACKGROUND, EARS, FACE, HAIR, NECK

ALPHAS = None


def alphas_cumprod():
    global ALPHAS
    if ALPHAS is None:
        from diffusers import DDPMScheduler

        ALPHAS = DDPMScheduler.from_config(rf.DDPM_DEFAULTS).alphas_cumprod
    return ALPHAS


class Oracle:
    """Exact noise for the clean image ``target`` ((1, 3, S, S) in [-1, 1]):
    eps = (x_t - sqrt(abar_t) target) / sqrt(1 - abar_t). Records the levels it is called at."""

    def __init__(self, target):
        self.target = target
        self.calls = []
        self.first_x = None

    def __call__(self, x_t, t):
        if self.first_x is None:
            self.first_x = x_t.clone()
        self.calls.append(int(t))
        a = alphas_cumprod()[t]
        return (x_t - a.sqrt() * self.target) / (1 - a).sqrt()


def _img(seed, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 1.8 - 0.9


@pytest.mark.parametrize("sampler", rf.SAMPLERS)
@pytest.mark.parametrize("t0", [1, 2, 300, 500, 1000])
def test_oracle_brings_both_samplers_back_to_x0(sampler, t0):
    x0 = _img(0)
    out = rf.sdedit_tensor(x0, None, Oracle(x0), sampler=sampler, t0=t0, steps=25,
                           generator=torch.Generator().manual_seed(1), progress=False)
    assert out.shape == x0.shape and out.dtype == torch.float32
    assert (out - x0).abs().max().item() < 1e-5


@pytest.mark.parametrize("sampler", rf.SAMPLERS)
@pytest.mark.parametrize("t0", [1, 300, 500, 1000])
def test_mask_keeps_input_and_regenerates_the_rest(sampler, t0):
    """An oracle for another image y: the edited region must become y, the kept one stay x0."""
    x0, y = _img(0), _img(1)
    keep = torch.zeros(1, 1, 32, 32)
    keep[..., :12, :] = 1.0
    keep[..., 20:, 8:24] = 1.0
    out = rf.sdedit_tensor(x0, keep, Oracle(y), sampler=sampler, t0=t0, steps=25, repeats=2,
                           generator=torch.Generator().manual_seed(1), progress=False)
    k = keep.bool().expand_as(x0)
    assert torch.equal(out[k], x0[k])  # kept: exactly the input
    assert (out[~k] - y[~k]).abs().max().item() < 1e-5


def test_soft_mask_blends():
    x0, y = _img(0), _img(1)
    keep = torch.full((1, 1, 32, 32), 0.25)
    out = rf.sdedit_tensor(x0, keep, Oracle(y), sampler="ddim", t0=400, generator=torch.Generator().manual_seed(0),
                           progress=False)
    assert (out - (0.25 * x0 + 0.75 * y)).abs().max().item() < 1e-5


def test_levels_visited():
    x0 = _img(0)
    o = Oracle(x0)
    rf.sdedit_tensor(x0, None, o, sampler="ddpm", t0=500, repeats=3, generator=torch.Generator().manual_seed(0),
                     progress=False)
    assert o.calls == list(range(499, -1, -1)) * 3  # the paper's sampler: every level, 3 repeats
    for t0, steps in [(500, 25), (300, 25), (1000, 25), (37, 10), (5, 25), (1000, 1), (700, 7)]:
        o = Oracle(x0)
        rf.sdedit_tensor(x0, None, o, sampler="ddim", t0=t0, steps=steps, generator=torch.Generator().manual_seed(0),
                         progress=False)
        stride = o.calls[0] - o.calls[1] if len(o.calls) > 1 else t0
        assert o.calls[0] == t0 - 1, (t0, steps, o.calls)  # starts at the requested level
        assert len(o.calls) <= min(steps, t0) and o.calls[-1] - stride < 0
        assert np.all(np.diff(o.calls) == -stride)
    o = Oracle(x0)
    rf.sdedit_tensor(x0, None, o, sampler="ddim", t0=500, steps=25, generator=torch.Generator().manual_seed(0),
                     progress=False)
    assert len(o.calls) == 25


def test_start_is_x0_noised_to_t0():
    x0 = _img(0, size=64)
    o = Oracle(x0)
    rf.sdedit_tensor(x0, None, o, sampler="ddim", t0=500, generator=torch.Generator().manual_seed(3), progress=False)
    a = alphas_cumprod()[499]
    eps = (o.first_x - a.sqrt() * x0) / (1 - a).sqrt()
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1.0) < 0.05


@pytest.mark.parametrize("bad", [0, 1001, -5, 2.5])
def test_t0_is_validated(bad):
    with pytest.raises(HairTryOnError, match="t0"):
        rf.sdedit(np.zeros((8, 8, 3), np.uint8), None, Oracle(_img(0, 8)), t0=bad, progress=False)


def test_unknown_sampler():
    with pytest.raises(HairTryOnError, match="sampler"):
        rf.sdedit(np.zeros((8, 8, 3), np.uint8), None, Oracle(_img(0, 8)), sampler="euler", progress=False)


# ------------------------------------------------------------------------ uint8 API and seeds
def _random_eps(x, t):
    """A denoiser that is wrong everywhere: the kept region must still come out exact."""
    return torch.sin(x * 7.0 + t * 0.01)


@pytest.mark.parametrize("sampler", rf.SAMPLERS)
def test_kept_pixels_bit_identical(sampler):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    keep = np.zeros((32, 32), bool)
    keep[4:20, 6:30] = True
    out = rf.sdedit(image, keep, _random_eps, sampler=sampler, t0=300, steps=10, seed=0, progress=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[keep], image[keep])
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 5  # the rest was regenerated
    soft = keep.astype(np.float32) * 0.999
    soft[keep] = 1.0
    soft[0, 0] = 0.5
    out = rf.sdedit(image, soft, _random_eps, sampler=sampler, t0=300, steps=10, seed=0, progress=False)
    assert np.array_equal(out[keep], image[keep])


def test_uint8_oracle_round_trip():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x0 = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    for sampler in rf.SAMPLERS:
        out = rf.sdedit(image, None, Oracle(x0), sampler=sampler, t0=700, seed=0, progress=False)
        assert np.array_equal(out, image)


@pytest.mark.parametrize("sampler", rf.SAMPLERS)
def test_seeds(sampler):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    kw = dict(sampler=sampler, t0=200, steps=8, progress=False)
    a = rf.sdedit(image, None, _random_eps, seed=7, **kw)
    b = rf.sdedit(image, None, _random_eps, seed=7, **kw)
    c = rf.sdedit(image, None, _random_eps, seed=8, **kw)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    state = torch.random.get_rng_state()
    rf.sdedit(image, None, _random_eps, seed=None, **kw)  # unseeded runs leave torch's global RNG alone
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------- edit mask, paste-back
def _labels():
    """A 64² mapping mask: background, a hair cap, a face, ears, neck+clothes at the bottom."""
    lab = np.full((64, 64), BACKGROUND, np.uint8)
    lab[8:30, 14:50] = HAIR
    lab[20:48, 20:44] = FACE
    lab[28:38, 17:20] = EARS
    lab[48:, 10:54] = NECK
    return lab


def test_edit_mask_paper_and_tight():
    lab = _labels()
    regen = lab == HAIR
    regen[40:44, 22:26] = True  # a filled artifact inside the face
    paper = rf.edit_mask(lab, regen, mode="paper", erode_px=2)
    tight = rf.edit_mask(lab, regen, mode="tight", erode_px=2, band_px=4)
    for keep in (paper, tight):
        assert keep.dtype == bool and keep.shape == lab.shape
        assert not keep[regen].any()  # changed pixels are always regenerated
        assert keep[34, 32] and keep[58, 32]  # face and clothes interiors kept
        assert not keep[20, 20]  # the face's border (eroded) is regenerated
        assert not keep[41, 23]
    assert not paper[lab == BACKGROUND].any()  # the paper's region regenerates the background
    assert tight[2, 2] and tight[40, 4]  # the tight one keeps background far from the change
    assert not tight[6, 30]  # ... but not the band around the new hair
    assert np.array_equal(tight & ~(lab == BACKGROUND), paper)
    with pytest.raises(HairTryOnError):
        rf.edit_mask(lab, regen, mode="loose")


def test_paste_back_exact_outside_and_feathered_inside():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    refined = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((120, 100), bool)
    region[20:90, 10:80] = True
    out = rf.paste_back(base, refined, region, feather_px=6)
    assert out.shape == base.shape and out.dtype == np.uint8
    assert np.array_equal(out[~region], base[~region])
    up = __import__("cv2").resize(refined, (100, 120), interpolation=__import__("cv2").INTER_CUBIC)
    assert np.array_equal(out[40:70, 30:60], up[40:70, 30:60])  # deep inside: the refined image
    edge = np.abs(out[20, 40:50].astype(int) - base[20, 40:50]).mean()
    inner = np.abs(out[30, 40:50].astype(int) - base[30, 40:50]).mean()
    assert edge < inner  # feathered: close to base at the border
    hard = rf.paste_back(base, up, region, feather_px=0)
    assert np.array_equal(hard[region], up[region]) and np.array_equal(hard[~region], base[~region])


def test_refine_any_size_exact_outside_edit():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    keep = np.ones((100, 100), bool)
    keep[10:50, 20:80] = False
    out = rf.refine(image, keep, _random_eps, sample_size=32, t0=300, steps=5, seed=0, progress=False)
    assert out.shape == image.shape
    assert np.array_equal(out[keep], image[keep])
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 5


# ---------------------------------------------------------------------------- model loading
@pytest.mark.parametrize("layout", ["flat", "pipe"])
def test_tiny_unet_loads_and_runs(tiny_folders, layout):
    unet, flat, pipe = tiny_folders
    folder = flat if layout == "flat" else pipe
    assert (folder / ("config.json" if layout == "flat" else "unet/config.json")).is_file()
    model = rf.load_diffusion_model(str(folder), device="cpu", precision="fp32")
    assert model.sample_size == 32 and model.dtype == torch.float32
    assert model.scheduler_config["beta_end"] == pytest.approx(0.03)  # its own schedule, not the defaults
    assert rf.load_diffusion_model(str(folder), device="cpu", precision="fp32") is model  # loaded once
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = unet(x, torch.tensor([300, 300])).sample
    got = model.predict_noise(x, 300)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 32, 32)
    assert torch.allclose(got, expected, atol=1e-4)  # the saved weights, not a fresh init
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    keep = np.zeros((32, 32), bool)
    keep[16:] = True
    for sampler in rf.SAMPLERS:
        out = rf.sdedit(image, keep, model, sampler=sampler, t0=20, steps=4, seed=1, progress=False)
        assert out.shape == image.shape and np.array_equal(out[keep], image[keep])
    assert model.info["model"] == str(folder)


def test_tiny_unet_bf16(tiny_folders):
    _, flat, _ = tiny_folders
    model = rf.load_diffusion_model(str(flat), device="cpu", precision="bf16")
    assert model.dtype == torch.bfloat16 and next(model.unet.parameters()).dtype == torch.bfloat16
    out = model(torch.zeros(1, 3, 32, 32), 10)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_folder_without_scheduler_uses_ddpm_defaults(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "m")
    model = rf.load_diffusion_model(str(tmp_path / "m"), device="cpu", precision="fp32")
    assert model.scheduler_config["beta_end"] == pytest.approx(0.02)


def test_not_a_diffusers_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(WeightsError, match="not a diffusers UNet2DModel folder"):
        rf.load_diffusion_model(str(tmp_path), device="cpu", precision="fp32")
    tiny_unet().save_pretrained(tmp_path / "noweights")
    (tmp_path / "noweights" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsError, match="not a diffusers UNet2DModel folder"):
        rf.load_diffusion_model(str(tmp_path / "noweights"), device="cpu", precision="fp32")
    with pytest.raises(WeightsError, match="does not exist"):
        rf.load_diffusion_model(str(tmp_path / "missing"), device="cpu")


def test_corrupt_weights(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="cannot load"):
        rf.load_diffusion_model(str(tmp_path / "m"), device="cpu", precision="fp32")


def test_precision_and_device_choices():
    with pytest.raises(HairTryOnError, match="fp16"):
        rf.load_diffusion_model("/nonexistent", device="cpu", precision="fp16")
    with pytest.raises(HairTryOnError, match="precision"):
        rf.load_diffusion_model("/nonexistent", device="cpu", precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(HairTryOnError, match="CUDA"):
            rf.load_diffusion_model("/nonexistent", device="cuda")


def test_offline_default_model_not_cached(empty_hf_cache):
    with pytest.raises(WeightsError) as err:
        rf.load_diffusion_model(None, device="cpu", precision="fp32")
    msg = str(err.value)
    assert rf.DEFAULT_MODEL in msg and "offline" in msg and str(empty_hf_cache) in msg
    assert "hf download google/ddpm-ema-celebahq-256" in msg and "--diffusion-model" in msg
    assert "\n" not in msg


def test_invalid_hub_id(empty_hf_cache):
    with pytest.raises(WeightsError, match="valid Hugging Face model id"):
        rf.load_diffusion_model("bad id with spaces!", device="cpu", precision="fp32")


@pytest.mark.parametrize("layout", ["flat", "pipe"])
def test_hub_model_from_cache_offline(empty_hf_cache, tiny_folders, layout):
    """A hub id resolves through huggingface_hub's cache, offline, in both repository layouts."""
    unet, flat, pipe = tiny_folders
    if layout == "flat":
        files = {n: flat / n for n in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json")}
    else:
        files = {n: pipe / n for n in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                       "scheduler/scheduler_config.json")}
    fake_hub_cache(empty_hf_cache, f"someone/tiny-{layout}", files)
    model = rf.load_diffusion_model(f"someone/tiny-{layout}", device="cpu", precision="fp32")
    assert model.sample_size == 32 and model.scheduler_config["beta_end"] == pytest.approx(0.03)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x, 5), unet(x, torch.tensor([5])).sample, atol=1e-4)


def test_hub_cache_without_weights_offline(empty_hf_cache, tiny_folders):
    _, flat, _ = tiny_folders
    fake_hub_cache(empty_hf_cache, "someone/partial", {"config.json": flat / "config.json"})
    with pytest.raises(WeightsError, match="weights of the diffusion model someone/partial are not in the"):
        rf.load_diffusion_model("someone/partial", device="cpu", precision="fp32")


def test_refine_modes(empty_hf_cache, tiny_folders):
    model, why = rf.load_for_refine("auto", None, device="cpu", precision="fp32")  # offline, nothing cached
    assert model is None and "skipped" in why and rf.DEFAULT_MODEL in why and "\n" not in why
    with pytest.raises(WeightsError, match="offline"):
        rf.load_for_refine("sdedit", None, device="cpu", precision="fp32")
    assert rf.load_for_refine("off") == (None, None)
    _, flat, _ = tiny_folders
    model, why = rf.load_for_refine("auto", str(flat), device="cpu", precision="fp32")
    assert why is None and model.sample_size == 32
    with pytest.raises(HairTryOnError, match="--refine"):
        rf.load_for_refine("maybe")


# ------------------------------------------------------- the photo's own resolution (issue 9)
def _hf_energy(img, size, where):
    """Mean squared detail above ``size``² (per channel) over ``where``."""
    x = img.astype(np.float32)
    return float(np.square(x - rf.low_pass(x, size))[where].mean())


def _textured(seed=0, n=256):
    """A (n, n, 3) photo-like image: a smooth gradient with 1-px-fine stripes and grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    base = np.stack([80 + 0.3 * xx, 100 + 0.2 * yy, 140 - 0.1 * xx], -1)
    stripes = 12.0 * ((xx.astype(int) // 1) % 2 - 0.5)[..., None]
    return np.clip(base + stripes + rng.normal(0, 4, (n, n, 3)), 0, 255).astype(np.uint8)


def test_restore_detail_is_exact_when_the_model_changes_nothing():
    image = _textured()
    given = __import__("cv2").resize(image, (32, 32), interpolation=__import__("cv2").INTER_AREA)
    assert np.array_equal(rf.restore_detail(image, given, given), image)
    rebuilt = np.zeros((256, 256), np.float32)
    rebuilt[:, 128:] = 1.0
    labels = np.zeros((256, 256), np.uint8)
    assert np.array_equal(rf.restore_detail(image, given, given, rebuilt, labels, seed=0), image)


def test_restore_detail_takes_the_models_colours_and_keeps_the_inputs_detail():
    import cv2

    image = _textured()
    given = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    edited = np.clip(given.astype(int) + [40, -30, 0], 0, 255).astype(np.uint8)  # a colour change
    out = rf.restore_detail(image, given, edited)
    everywhere = np.ones((256, 256), bool)
    moved = out.reshape(-1, 3).mean(0) - image.reshape(-1, 3).mean(0)
    assert np.allclose(moved, [40, -30, 0], atol=1.0)
    assert abs(_hf_energy(out, 32, everywhere) / _hf_energy(image, 32, everywhere) - 1) < 0.02
    blown_up = cv2.resize(edited, (256, 256), interpolation=cv2.INTER_CUBIC)  # what SDEdit gave before
    assert _hf_energy(blown_up, 32, everywhere) < 0.1 * _hf_energy(image, 32, everywhere)


def test_rebuilt_pixels_take_the_grain_of_their_class():
    """Left: real grain of class 0; right: a smooth fill of class 0 (rebuilt); bottom rows: class
    2 with a finer grain. A model that repaints the fill gives it the grain of its own class."""
    import cv2

    rng = np.random.default_rng(0)
    n = 256
    image = np.full((n, n, 3), 120, np.float32)
    labels = np.zeros((n, n), np.uint8)
    labels[192:] = 2
    image[:192, :128] += rng.normal(0, 10, (192, 128, 3))
    image[192:] += rng.normal(0, 4, (64, n, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    rebuilt = np.zeros((n, n), np.float32)
    rebuilt[:192, 128:] = 1.0
    given = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    edited = np.clip(given.astype(int) + 25, 0, 255).astype(np.uint8)  # the model repainted everything
    out = rf.restore_detail(image, given, edited, rebuilt, labels, seed=0)
    fill, real = rebuilt > 0, (labels == 0) & (rebuilt == 0)
    ratio = _hf_energy(out, 32, fill) / _hf_energy(image, 32, real)
    assert 0.8 < ratio < 1.25, ratio
    assert _hf_energy(image, 32, fill) < 0.05 * _hf_energy(image, 32, real)  # it was smooth
    assert abs(out[fill].mean() - image[fill].mean() - 25) < 1.5  # and took the model's colour
    # a different draw for another seed, the same for the same seed
    again = rf.restore_detail(image, given, edited, rebuilt, labels, seed=0)
    other = rf.restore_detail(image, given, edited, rebuilt, labels, seed=1)
    assert np.array_equal(out, again) and not np.array_equal(out[fill], other[fill])
    # no real pixel of the class anywhere: no texture is invented
    bare = rf.restore_detail(image, given, edited, rebuilt, labels, donors=labels == 2, seed=0)
    assert _hf_energy(bare, 32, fill) < 0.05 * _hf_energy(image, 32, real)
    # a model that kept the fill (as an oracle would) leaves it as it was
    kept = rf.restore_detail(image, given, given, rebuilt, labels, seed=0)
    assert np.array_equal(kept, image)


def test_detail_masks_rebuilt_and_donors():
    lab = _labels()
    removed = np.zeros((64, 64), bool)
    removed[4:30, 10:54] = True  # the old hair's place
    alpha = np.zeros((64, 64), np.float32)
    alpha[8:30, 14:50] = 1.0  # the new hair covers most of it
    alpha[8:30, 14] = 0.5
    artifacts = np.zeros((64, 64), bool)
    artifacts[10:12, 20:24] = True  # a fill on the new hair
    inside = np.ones((64, 64), bool)
    inside[:, 60:] = False
    rebuilt, donors = rf.detail_masks(lab, removed, alpha, artifacts, inside)
    assert rebuilt.dtype == np.float32 and donors.dtype == bool
    assert rebuilt[5, 30] == 1 and rebuilt[20, 30] == 0 and rebuilt[20, 14] == 0.5  # uncovered / covered / edge
    assert (rebuilt[artifacts] == 1).all()  # fills are never real detail, even on the new hair
    assert donors[15, 30] and not donors[10, 21] and not donors[20, 14]  # opaque hair; not a fill; not its edge
    assert not donors[25, 30]  # the face under the new hair is not the face
    assert donors[34, 32] and donors[60, 30] and not donors[40, 61]  # the face, clothes; not outside the photo
    assert not (donors & (rebuilt > 0)).any()
