"""The try-on on ordinary photos (../shared/portraits): what it invents comes from the target's
own photo, the face stays the target's own, and pairs it cannot do well are declined with a
reason a person understands."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from hairtryon.checks import CannotDoWell
from hairtryon.metrics import colour_difference
from hairtryon.pipeline import HairTryOn
from hairtryon.segmentation import BACKGROUND, FACE, HAIR, NECK


@pytest.fixture(scope="module")
def portraits(maskgan_dir) -> Path:
    p = maskgan_dir.parent.parent / "portraits"
    if not p.is_dir():
        pytest.skip(f"ordinary portraits not found at {p}")
    return p


@pytest.fixture(scope="module")
def tool(segmenter):
    return HairTryOn(segmenter)


@pytest.fixture(scope="module")
def long_to_short(tool, portraits):
    """Long straight hair partly over the face, onto a short curly bob: the old hair uncovers a
    cheek, part of the forehead, a shoulder and background. (Forced: the old hair also hides the
    tail of an eyebrow, which the pair is declined for; the rest is what is tested here.)"""
    return tool(portraits / "williamyang1991_i5R8hbZFDdc.jpg", portraits / "thumbor_800px-Katherine_Maher.jpg",
                refine="classic", force=True)


def _frame(result):
    tgt = result.target
    return tgt, tgt.frame.extract(result.image)


def test_uncovered_skin_has_the_targets_own_tone(long_to_short):
    tgt, out = _frame(long_to_short)
    m = long_to_short.masks
    rebuilt_skin = m["removed"] & (m["mapping_mask"] == FACE) & (m["hair_alpha"] < 0.05) & tgt.inside
    own_skin = (tgt.semantic.labels == FACE) & ~m["removed"]
    own_skin = cv2.erode(own_skin.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert rebuilt_skin.sum() > 2000  # the case is real: a cheek and forehead were uncovered
    de = colour_difference(out, rebuilt_skin, tgt.crop, own_skin)
    print("uncovered skin vs the target's own: CIEDE2000", round(de, 2))
    assert de <= 6.0  # measured 5.2: the hidden cheek is partly in the face's own shadow


def test_the_face_stays_the_targets_own(long_to_short):
    """Every face pixel the try-on neither covers with new hair nor takes as old hair (strands)
    nor lifts from its shadow (``tinted``) is the target's own, bit for bit, in the
    full-resolution result."""
    tgt = long_to_short.target
    m = long_to_short.masks
    face = (tgt.semantic.labels == FACE) & ~m["removed"] & ~m["tinted"] & (m["paste_alpha"] == 0) & tgt.inside
    face = cv2.erode(face.astype(np.uint8), np.ones((3, 3), np.uint8))
    assert face.sum() > 10000
    rows, cols, brows, bcols = tgt.frame.roi()
    full = tgt.frame.to_image_box(face, cv2.INTER_NEAREST)[brows, bcols] > 0
    assert (long_to_short.image[rows, cols][full] == tgt.image[rows, cols][full]).all()


def test_no_shade_line_where_the_old_hair_crossed_the_face(long_to_short):
    """The old hair's soft shadow on the face goes with the hair: along the line where the kept
    face meets the skin rebuilt under the old hair, the skin is about as light as the kept face
    a little farther in (no dark line tracing the old hair's edge)."""
    from hairtryon.framing import grow

    tgt, out = _frame(long_to_short)
    m = long_to_short.masks
    u = tgt.unit
    lum = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    rebuilt = m["removed"] & (m["mapping_mask"] == FACE) & (m["hair_alpha"] < 0.05) & tgt.inside
    assert (m["tinted"] & (tgt.semantic.labels == FACE)).sum() > 1000  # the shade was found, its texture kept
    seen = (tgt.semantic.labels == FACE) & ~m["removed"] & tgt.inside  # its shade's band included
    edge = grow(rebuilt, u / 200) & grow(seen, u / 200)
    farther = seen & ~m["tinted"] & grow(rebuilt, u / 25) & ~grow(rebuilt, u / 60)
    assert edge.sum() > 2000 and farther.sum() > 5000  # the case is real: the old hair crossed the forehead
    drop = float(np.median(lum[farther]) - np.median(lum[edge]))
    print("lightness drop at the old hair's edge:", drop)
    assert drop <= 13.0  # measured 9 (the face's own rounding); with the shadow left on the face, 22


@pytest.fixture(scope="module")
def curls_to_crop(tool, portraits):
    """Blond curls with flyaway strands against a blurred lawn, onto a crop: the old hair's whole
    outline, strands and halo included, becomes background."""
    return tool(portraits / "thumbor_800px-Katherine_Maher.jpg", portraits / "ageitgey_obama.jpg",
                refine="classic", force=True)


def _thin_lines(image: np.ndarray, kernel: int) -> np.ndarray:
    """CIELAB distance of each pixel to a median filter of ``kernel``: high on thin strands."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    med = cv2.medianBlur(lab, kernel | 1)
    return np.sqrt(((lab.astype(np.float32) - med.astype(np.float32)) ** 2).sum(-1))


def test_no_flyaway_strands_around_the_old_hair(curls_to_crop):
    """Around where the old curls were, the rebuilt scene has no more thin bright lines than the
    lawn farther away: the flyaway strands went with the hair."""
    from hairtryon.framing import grow

    tgt, out = _frame(curls_to_crop)
    m = curls_to_crop.masks
    u = tgt.unit
    old_hair = tgt.semantic.labels == HAIR
    scene = (tgt.semantic.labels == BACKGROUND) & tgt.inside & (m["hair_alpha"] < 0.02)
    around = scene & grow(old_hair, u / 12) & ~grow(old_hair, u / 100)
    far = scene & ~grow(old_hair, u / 6)
    assert around.sum() > 5000 and far.sum() > 5000
    before = _thin_lines(tgt.crop, int(u / 100))
    after = _thin_lines(out, int(u / 100))
    strands_before = float((before[around] > 8).mean())
    strands_after = float((after[around] > 8).mean())
    lawn = float((after[far] > 8).mean())
    print(f"thin-line share around the old hair: before {strands_before:.4f}, after {strands_after:.4f}; far lawn {lawn:.4f}")
    assert strands_before > 3 * max(lawn, 1e-3)  # the case is real: the photo has flyaways there
    assert strands_after <= 2 * max(lawn, 1e-3)


def test_the_new_hairline_lies_on_skin(tool, portraits):
    """IBM_face <- neutral (long hair to an updo): the new hairline lies higher up, on what the
    old hair covered. Under the soft edge of its fine hairs (alpha 0.02-0.99, above the eyes,
    next to the uncovered forehead) the rebuild puts skin, not the background that showed
    through them as a pale rim: rebuilt pixels there farther than CIEDE2000 20 from her skin
    are under 15% (measured 10%; 22% with background under them)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    from hairtryon.framing import grow

    r = tool(portraits / "IBM_face.png", portraits / "ahn-github_neutral.jpeg", refine="classic", force=True)
    tgt, m = r.target, r.masks
    a = m["hair_alpha"]
    bare = m["removed"] & (a < 0.02) & (m["mapping_mask"] == FACE) & tgt.inside
    edge = grow(bare, tgt.unit / 60) & m["removed"] & (a >= 0.02) & (a < 0.99) & tgt.inside
    edge[int(tgt.points[1:3, 1].mean()):] = False
    assert edge.sum() > 1000
    hairless = r.stages["old hair filled"]
    own = (tgt.semantic.labels == FACE) & ~m["removed"] & tgt.inside
    ref = rgb2lab(np.median(tgt.crop[own], axis=0).reshape(1, 1, 3) / 255.0)
    px = rgb2lab(hairless[edge].reshape(-1, 1, 3) / 255.0)
    far = float((deltaE_ciede2000(px, np.broadcast_to(ref, px.shape))[:, 0] > 20).mean())
    print("under the new hairline, far from her skin:", round(far, 3))
    assert far < 0.15


def test_fast_marching_leaves_the_new_hairs_fringe_alone(tool, portraits):
    """Christophe_Henner <- yRpe13BHdKw: along the afro's inner edge beside his cheek the
    re-parse sees hair where the mapping mask says background (the soft edge of the curls). That
    is the new hair's own fringe, not an artifact: fast marching fills none of it (a Telea fill
    there cut the edge off in a dark smear of hair and lawn), and the fast-marching image equals
    the mapping image wherever the new hair shows."""
    from hairtryon.alignment import warp_labels

    r = tool(portraits / "thumbor_800px-Christophe_Henner_-_June_2016.jpg",
             portraits / "williamyang1991_yRpe13BHdKw.jpg", refine="classic")
    m = r.masks
    fringe = m["hair_alpha"] > 0.05
    # the case is real: the re-parse sees hair on the fringe where the mapping mask does not
    reparsed = tool.parse_crop(r.stages["mapping image"]).labels
    assert ((reparsed == HAIR) & (m["mapping_mask"] != HAIR) & fringe).sum() > 100
    assert not (m["artifacts"] & fringe).any()
    assert (r.stages["fast marching"][fringe] == r.stages["mapping image"][fringe]).all()


def test_fast_marching_leaves_the_targets_own_pixels_alone(tool, loho_dir):
    """loho 00018 <- 19501: beside the new black hair at the photo's top edge, the target's dark
    foliage is taken for hair by the re-parse (the new hair beside it), though the target's own
    parse saw background there and the replacing left it as it was. Those pixels are no
    artifacts: the result equals the target photo on every pixel the try-on neither rebuilt,
    nor tinted, nor covered with new hair, and that the target's parse called no hair (measured
    0 changed; about 8,000 were filled, with a lump of hair texture, before)."""
    # (forced: the short cut leaves the side of her head bare, which the checks decline)
    r = tool(loho_dir / "images" / "00018.jpg", loho_dir / "images" / "19501.jpg", refine="classic", force=True)
    tgt, out = _frame(r)
    m = r.masks
    own = ~m["removed"] & (tgt.semantic.labels != HAIR) & (m["hair_alpha"] == 0) & tgt.inside
    if m["tinted"] is not None:
        own &= ~m["tinted"]
    assert m["artifacts"].any()  # the re-parse still disagrees where the try-on rebuilt
    changed = (out != tgt.crop).any(axis=2) & own
    print("own pixels changed:", int(changed.sum()), "of", int(own.sum()))
    assert not changed.any()


def test_a_rebuild_takes_nothing_from_under_the_new_hair(tool, loho_dir):
    """Fast marching rebuilds a large artifact from the target's own pixels of its class; the
    new hair lies over some of them in the mapping image and must be no source (a fill there
    copied strands of it into the background). Here a magenta stroke stands for the new hair
    beside a hole in loho 00018's background: none of it reaches the hole when it is avoided,
    as the control without ``avoid`` shows it would."""
    tgt = tool.analyze(loho_dir / "images" / "00018.jpg", role="target")
    s, u = tgt.frame.size, tgt.unit
    regions = tool.regions(tgt)
    bg = (tgt.semantic.labels == BACKGROUND) & ~regions.removed & tgt.inside
    far = cv2.distanceTransform(bg.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(far), far.shape)  # the background's most open place
    r = int(min(far[y, x] - 2, u / 6))
    yy, xx = np.mgrid[:s, :s]
    d = np.hypot(yy - y, xx - x)
    hole = d < r * 0.5
    stroke = (d >= r * 0.5) & (d < r) & bg
    image = tgt.crop.copy()
    image[stroke] = (255, 0, 255)
    magenta = lambda im: (im[..., 0] > 200) & (im[..., 1] < 80) & (im[..., 2] > 200)  # noqa: E731
    avoided = tool._rebuild(tgt, image, hole, tgt.semantic.labels, shade_done=True, avoid=stroke)
    control = tool._rebuild(tgt, image, hole, tgt.semantic.labels, shade_done=True)
    print("magenta in the hole: avoided", int(magenta(avoided)[hole].sum()), "control",
          int(magenta(control)[hole].sum()), "of", int(hole.sum()))
    assert magenta(control)[hole].mean() > 0.05  # the stroke is a source unless avoided
    assert not magenta(avoided)[hole].any()


def test_a_thin_strip_of_rebuilt_skin_has_the_skin_beside_it(tool, loho_dir):
    """loho 67172 <- 52364: along the jaw on the photo's right the old hair lay over the face's
    edge in a strip a few pixels wide, rebuilt as skin in the same fill as the forehead the new
    bangs uncover. The strip's tone is its own neighbourhood's: its median colour within
    CIEDE2000 6 of the visible skin beside it (measured 1.9; 10.2, a brown line along the jaw,
    when the texture's local mean was pushed in from the lighter forehead because the strip is
    thinner than the scale that mean is taken at)."""
    r = tool(loho_dir / "images" / "67172.jpg", loho_dir / "images" / "52364.jpg", refine="classic")
    tgt, out = _frame(r)
    m = r.masks
    below_eyes = np.arange(out.shape[0])[:, None] > tgt.points[1:3, 1].mean() + tgt.unit / 20
    right = np.arange(out.shape[1])[None, :] > tgt.points[:, 0].mean()
    strip = m["removed"] & (m["mapping_mask"] == FACE) & (m["hair_alpha"] < 0.05) & below_eyes & right & tgt.inside
    assert 300 < strip.sum() < 0.02 * (tgt.semantic.labels == FACE).sum()  # the case is real: a strip
    near = cv2.dilate(strip.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    beside = near & (tgt.semantic.labels == FACE) & ~m["removed"] & tgt.inside
    de = colour_difference(out, strip, tgt.crop, beside)
    print("thin rebuilt strip against the skin beside it: dE", round(de, 2), "pixels", int(strip.sum()))
    assert de < 6.0


def test_no_piece_of_the_glasses_on_the_rebuilt_forehead(tool, portraits):
    """Christophe_Henner wears glasses; the forehead his curls uncover under the new afro is
    skin textured from his own plain skin, which leaves out the frame and its glint (their
    grey is far from the skin's chroma, their edges sharp), and from patches that lie wholly on
    it: rebuilt pixels whose chroma lies over 8 from his skin's median are under 0.2% (measured
    0%; 0.7% when patches next to the frame were taken, a grey streak across the forehead)."""
    from hairtryon.alignment import warp_labels

    r = tool(portraits / "thumbor_800px-Christophe_Henner_-_June_2016.jpg",
             portraits / "williamyang1991_yRpe13BHdKw.jpg", refine="classic")
    tgt, out = _frame(r)
    m = r.masks
    rebuilt = m["removed"] & (m["mapping_mask"] == FACE) & (m["hair_alpha"] < 0.05) & tgt.inside
    own = (tgt.semantic.labels == FACE) & ~m["removed"] & tgt.inside
    assert rebuilt.sum() > 1000
    chroma = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB).astype(np.float32)[:, :, 1:]
    off = np.linalg.norm(chroma(out) - np.median(chroma(tgt.crop)[own], axis=0), axis=2)
    share = float((off[rebuilt] > 8).mean())
    print("rebuilt skin far from the skin's chroma:", round(share, 5))
    assert share < 0.002


def test_background_rebuilt_far_from_its_own_keeps_the_tone_of_its_patches(tool, loho_dir):
    """loho 00148 <- 00018: the old hair reached the photo's top edge, so the background rebuilt
    above the new bob lies far (over 1/8 of the face's frame) from any visible background. There
    it keeps the tone of the patches it was built from (the gravel's), not a tone stretched
    from the few background pixels at the hole's edge: its median lightness within 8 L* of the
    photo's own background (measured 3.1 lighter; 26.7 darker when the membrane's tone is
    carried all the way across). Forced: the bangs hide the brows, which the pair is declined for."""
    r = tool(loho_dir / "images" / "00148.jpg", loho_dir / "images" / "00018.jpg", refine="classic", force=True)
    tgt, out = _frame(r)
    m = r.masks
    own = (tgt.semantic.labels == BACKGROUND) & ~m["removed"] & tgt.inside
    far = cv2.distanceTransform((~own).astype(np.uint8), cv2.DIST_L2, 3) > tgt.unit / 8
    rebuilt = m["removed"] & (m["hair_alpha"] < 0.05) & (m["mapping_mask"] == BACKGROUND) & far & tgt.inside
    assert rebuilt.sum() > 5000  # the case is real
    lightness = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) * 100 / 255
    gap = float(np.median(lightness[own]) - np.median(lightness[rebuilt]))
    print("rebuilt background far from its own: L* below the photo's background by", round(gap, 1))
    assert abs(gap) <= 8.0, gap


def _flat_tiles(image: np.ndarray, region: np.ndarray, tile: int) -> float:
    """Share of the ``tile``-sized tiles inside ``region`` whose luminance is nearly constant."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    flat = total = 0
    for y in range(0, grey.shape[0] - tile, tile):
        for x in range(0, grey.shape[1] - tile, tile):
            if region[y:y + tile, x:x + tile].all():
                total += 1
                flat += grey[y:y + tile, x:x + tile].std() < 0.6
    return flat / max(total, 1)


def test_no_blocks_where_the_old_hair_was(long_to_short):
    """The background, neck and shoulders the old hair covered are as textured as the photo's own
    (no flat plates or mosaics): the share of flat tiles there is no larger than in the real
    background and body, and their fine-detail energy is comparable."""
    tgt, out = _frame(long_to_short)
    m = long_to_short.masks
    tile = max(8, tgt.frame.size // 96)
    for cls in (BACKGROUND, NECK):
        rebuilt = m["removed"] & (m["mapping_mask"] == cls) & (m["hair_alpha"] < 0.05) & tgt.inside
        rebuilt = cv2.erode(rebuilt.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        real = (tgt.semantic.labels == cls) & ~cv2.dilate(m["removed"].astype(np.uint8),
                                                          np.ones((31, 31), np.uint8)).astype(bool) & tgt.inside
        if rebuilt.sum() < 20 * tile * tile or real.sum() < 20 * tile * tile:
            continue
        flat_new, flat_real = _flat_tiles(out, rebuilt, tile), _flat_tiles(tgt.crop, real, tile)
        log = np.abs(cv2.Laplacian(cv2.GaussianBlur(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32),
                                                    (0, 0), 1.0), cv2.CV_32F))
        ratio = np.median(log[rebuilt]) / max(np.median(log[real]), 1e-6)
        print(f"class {cls}: flat tiles rebuilt {flat_new:.2f} vs real {flat_real:.2f}; detail ratio {ratio:.2f}")
        assert flat_new <= flat_real + 0.3  # measured 0.34 vs 0.07 on the bokeh; a push-pull fill gives 0.8+
        assert 0.5 <= ratio <= 2.0


# ------------------------------------------------------------------------------ declines
DECLINES = [  # (target, source, concern code, words the message must have)
    ("thumbor_800px-Katherine_Maher.jpg", "Azure-Samples_detection3.jpg", "headwear", "headwear"),
    ("ahn-github_surprised.jpeg", "thumbor_800px-Katherine_Maher.jpg", "headwear", "headwear"),
    ("thumbor_800px-Katherine_Maher.jpg", "lulumuts_wash-and-go.jpg", "yaw", "turned too far"),
    ("thumbor_800px-Katherine_Maher.jpg", "lulumuts_afro-twa.jpg", "hands", "hand"),
    # a hand holding a phone to her ear, half turned away: the palm detector is unsure, Pose sure
    ("Niremizov_image-2-women-on-phones.jpg", "ahn-github_neutral.jpeg", "hands", "hand"),
    ("thumbor_800px-Katherine_Maher.jpg", "Azure-Samples_detection6.jpg", "other_people", "another person"),
    ("thumbor_800px-Katherine_Maher.jpg", "thumbor_800px-Christophe_Henner_-_June_2016.jpg", "cut_off", "cut off"),
    ("williamyang1991_unsplash-rDEOVtE7vOs.jpg", "ahn-github_happy-baby.jpeg", "no_hair", "almost no hair"),
    # the long hair hides her right eyebrow's tail; the bob would show it
    ("williamyang1991_i5R8hbZFDdc.jpg", "thumbor_800px-Katherine_Maher.jpg", "features", "eyebrow"),
    # loose long hair to an updo: the wall and the patterned shirt under it, 1.9x the face's area
    ("IBM_face.png", "ahn-github_neutral.jpeg", "invent", "invented"),
    # braids swept to one side, onto a short-haired head: the wall would come up to his temple
    ("ahn-github_angry.jpg", "lulumuts_knotless-braids.jpg", "head", "side of the head"),
    # the photo ends at her forehead: his short hair on top would lie beyond it (19% inside)
    ("Zelex_kodim15.png", "ahn-github_angry.jpg", "outside", "cut off by the photo's edge"),
]


@pytest.mark.parametrize("target,source,code,words", DECLINES)
def test_declines_say_why(tool, portraits, target, source, code, words):
    with pytest.raises(CannotDoWell) as err:
        tool(portraits / target, portraits / source, refine="classic")
    concerns = [c for c in err.value.concerns if c.decline]
    assert code in {c.code for c in concerns}, concerns
    message = str(err.value)
    assert words in message and ("target photo" in message or "source photo" in message)
    assert "\n" not in message


def test_bangs_onto_the_same_bangs_leave_no_eyebrow_to_draw(tool, loho_dir):
    """The eyebrow check weighs what the new hair covers: loho 02602's bangs hide her brows
    (declined onto a bob), but onto her own bangs nothing of them is left bare (measured 0.3%)."""
    photo = loho_dir / "images" / "02602.jpg"
    r = tool(photo, photo, refine="classic", force=True)  # (forced: the photo cuts the source's hair off)
    assert "features" not in {c["code"] for c in r.meta["concerns"]}, r.meta["concerns"]
    bob = tool(photo, loho_dir / "images" / "08244.jpg", refine="classic", force=True)
    assert any(c["code"] == "features" and c["declined"] for c in bob.meta["concerns"])


def test_a_short_cut_that_uncovers_less_than_the_face_is_not_declined(tool, portraits):
    """neutral <- obama: her hair tied back becomes a crop, and the wall beside her head is
    rebuilt (0.8x her face's area). That result passes by eye, so the check of what is left to
    invent lets it through; IBM_face <- neutral (1.9x, above) it declines."""
    r = tool(portraits / "ahn-github_neutral.jpeg", portraits / "ageitgey_obama.jpg", refine="classic")
    assert "invent" not in {c["code"] for c in r.meta["concerns"]}, r.meta["concerns"]
    assert (r.masks["hair_alpha"] > 0.5).sum() > 0


def test_a_big_hairstyle_past_the_photos_top_edge_is_given_with_a_warning(tool, portraits):
    """Christophe's photo ends above his hair: the afro reaches far beyond it (35% of its part
    above the eyes inside), but its sides and its length show plainly (57% of it inside): the
    result comes, with the warning, not declined (kodim15 <- angry above is)."""
    r = tool(portraits / "thumbor_800px-Christophe_Henner_-_June_2016.jpg",
             portraits / "williamyang1991_yRpe13BHdKw.jpg", refine="classic")
    outside = [c for c in r.meta["concerns"] if c["code"] == "outside"]
    assert outside and not outside[0]["declined"], r.meta["concerns"]
    assert any("cuts off the top of the new hairstyle" in w for w in r.meta["warnings"])


def test_hair_that_runs_out_of_the_photo_below_is_no_concern():
    """``checks.shown_check`` on drawn mattes: long hair cut by the photo's bottom edge is an
    ordinary crop; a crown beyond its top edge declines; a big one half beyond it warns."""
    from hairtryon.checks import shown_check

    s, eyes = 400, 200.0
    inside = np.zeros((s, s), bool)
    inside[:300] = True  # the photo ends 100 px below the eyes
    long_hair = np.zeros((s, s), np.float32)
    long_hair[80:400, 100:300] = 1.0  # from the crown to far below the photo
    assert shown_check(long_hair, inside, eyes) == []
    inside_top = np.zeros((s, s), bool)
    inside_top[150:] = True  # the photo ends 50 px above the eyes
    crown = np.zeros((s, s), np.float32)
    crown[40:170, 120:280] = 1.0  # short hair on top
    (c,) = shown_check(crown, inside_top, eyes)
    assert c.decline and c.code == "outside" and abs(c.value - 20 / 130) < 0.01
    big = np.zeros((s, s), np.float32)
    big[40:330, 60:340] = 1.0  # an afro down to the chin
    (c,) = shown_check(big, inside_top, eyes)
    assert not c.decline and abs(c.value - 50 / 160) < 0.01


def test_the_skull_is_the_top_of_the_head():
    """``mapping.skull``: above the eyes only, about as wide as the face and reaching about as
    far above the eyes as the chin lies below them, tilted with the face."""
    from hairtryon.mapping import skull

    s = 400
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    oval = np.stack([200 + 60 * np.cos(t), 200 + 90 * np.sin(t)], axis=1)  # a face 120 wide
    eyes, chin = np.array([200.0, 180.0]), np.array([200.0, 290.0])
    head = skull(oval, eyes, chin, s)
    assert not head[181:].any()  # nothing below the eyes
    assert head[100, 200] and head[180 - 95, 200] and not head[180 - 115, 200]  # up to ~0.95 of 110
    assert head[170, 200 + 62] and not head[170, 200 + 75]  # ~1.1 of the half-width 60
    tilted = skull(oval, eyes, np.array([240.0, 283.0]), s)  # chin off to the right: the head leans left
    top = lambda m: np.nonzero(m[np.nonzero(m.any(axis=1))[0][0]])[0].mean()  # middle of its top row
    assert abs(top(head) - 200) < 3 and top(tilted) < 200 - 20


def test_a_wooden_railing_is_no_hand(tool, portraits):
    """The palm detector, asked again at a lower confidence where the first look found no hand,
    also sees a 'hand' on the sunlit railing beside this woman's hair; Pose is not sure of a hand
    there (visibility about 0.6), so it is none (the hand at Niremizov's ear is taken: above)."""
    a = tool.analyze(portraits / "williamyang1991_pexels-andrea-piacquadio-733872.jpg", role="target")
    assert tool.body(a).hands == ()


def test_force_gives_the_result_with_the_reason(tool, portraits):
    r = tool(portraits / "thumbor_800px-Katherine_Maher.jpg", portraits / "Azure-Samples_detection3.jpg",
             refine="classic", force=True)
    assert any("headwear" in w for w in r.meta["warnings"])
    assert any(c["code"] == "headwear" and c["declined"] for c in r.meta["concerns"])


def test_ordinary_pair_is_not_declined(tool, portraits):
    r = tool(portraits / "hongweijia_Paul2.jpeg", portraits / "thumbor_800px-Katherine_Maher.jpg", refine="classic")
    assert not any(c["declined"] for c in r.meta["concerns"])
    hair = r.masks["hair_alpha"] > 0.5
    assert hair.sum() > 0.05 * hair.size


def test_body_from_person_relabels_only_this_persons_body():
    """The parser's background becomes neck+clothes only below the chin, away from the hair, in
    the person region that holds the chin: not another person's body, not the scene between
    strands, not above the chin."""
    from hairtryon.segmentation import SemanticMap, body_from_person

    s = 200
    labels = np.full((s, s), BACKGROUND, np.uint8)
    labels[40:100, 80:120] = FACE
    labels[60:130, 60:70] = HAIR  # a lock of hair down the left side
    person = np.zeros((s, s), np.float32)
    person[30:, 50:150] = 1.0  # this person: head and body
    person[120:, 170:] = 1.0  # someone else, not touching
    probs = np.zeros((5, s, s), np.float32)
    probs[BACKGROUND] = 1.0
    out = body_from_person(SemanticMap(labels, probs), person, chin=(100, 100), guard=5)
    body = out.labels == NECK
    assert body[150, 100] and body[190, 140]  # this person's shoulders
    assert not body[:101].any()  # nothing above the chin
    assert not body[120:, 170:].any()  # not the other person
    assert not body[105:125, 56:74].any()  # not beside the hair
    assert (out.probs.argmax(0)[body] == NECK).all()  # the probabilities say the same


def test_a_bare_shoulder_the_parser_missed_is_body(long_to_short):
    """On i5R8hbZFDdc the parser calls the bare shoulders background; the person segmenter's
    mask makes them body, so the shoulder the old hair hid is rebuilt as the other one's mirror
    image (skin), not from the scene behind."""
    tgt = long_to_short.target
    assert tgt.semantic.meta.get("body_from_person", 0) > 0.02 * tgt.semantic.labels.size
    m = long_to_short.masks
    rebuilt_body = m["removed"] & (m["mapping_mask"] == NECK) & (m["hair_alpha"] < 0.05)
    assert rebuilt_body.sum() > 0.01 * rebuilt_body.size


@pytest.fixture(scope="module")
def lifted_fringe(tool, portraits):
    """Paul2's swept-up hair onto a man with a close crop, against a pale wall: the source's
    photo mirrored beyond its border for the matting, and a fringe that lifts off the source's
    temple over this head's narrower one."""
    return tool(portraits / "Azure-Samples_detection5.jpg", portraits / "hongweijia_Paul2.jpeg", refine="classic")


def test_no_detached_copy_of_the_hair_out_in_the_scene(lifted_fringe):
    """The matting mirrors the source photo beyond its border (hair the border cuts goes on), but
    the mirror image of hair that ends short of the border came back as a grey stroke in the wall
    beside the head. No part of the new hair's matte in the target photo lies apart from its
    main body (measured: one stroke of 2,602 frame pixels without the rule, none with it)."""
    tgt = lifted_fringe.target
    a = lifted_fringe.masks["hair_alpha"]
    some = ((a > 0.05) & tgt.inside).astype(np.uint8)
    n, parts, stats, _ = cv2.connectedComponentsWithStats(some, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    assert len(areas) and areas.max() > 0.05 * some.size  # the case is real: a head of hair
    apart = [int(x) for x in sorted(areas)[:-1] if x > (tgt.unit / 40) ** 2]
    print("parts of the matte apart from the hair:", apart)
    assert apart == []


def test_no_wall_inside_the_hairline(tool, lifted_fringe):
    """Between the lifted fringe and the forehead, and at the temple, the target's own wall
    showed inside the hairline as white patches. Holes that the new hair and the face close all
    round and that touch the face are hair now: no pixel of the wall, as the photo had it, is left
    in a hole of the new hair and the face's outline above the eyes, but a few along the rim."""
    from scipy import ndimage

    tgt, out = _frame(lifted_fringe)
    m = lifted_fringe.masks
    hair = m["hair_alpha"] > 0.5
    face = tool.regions(tgt).face  # the face's outline (Face Mesh oval and parse)
    holes = ndimage.binary_fill_holes(hair | face) & ~(hair | face)
    holes[int(tgt.points[1:3, 1].mean()):] = False
    wall = (tgt.semantic.labels == BACKGROUND) & ~m["removed"] & tgt.inside
    shown = holes & wall & (np.abs(out.astype(int) - tgt.crop.astype(int)).max(axis=2) < 8)
    print("the wall's own pixels inside the hairline:", int(shown.sum()))
    assert shown.sum() < 60  # measured 26 (along the grown hair's soft rim); 214 without the rule


def test_hair_that_lay_against_the_sources_cheek_lies_against_this_one(tool, portraits):
    """Christophe <- yRpe13BHdKw: the source's curls fall against her cheeks, and his face, a
    little turned, is narrower on the photo's right; a sliver of the green park showed between
    his cheek and the curls, edged with a green line, a cut-out look. From the eyes to the chin,
    in the gaps (up to a tenth of the head) between the face and the new hair in a row, no pixel
    of his own background is left as the photo had it where her face lay, but a few (measured:
    1,871 without the rule, 1 with it)."""
    from hairtryon.alignment import warp_labels

    r = tool(portraits / "thumbor_800px-Christophe_Henner_-_June_2016.jpg",
             portraits / "williamyang1991_yRpe13BHdKw.jpg", refine="classic")
    tgt, out = _frame(r)
    m = r.masks
    hair = m["hair_alpha"] > 0.5
    face = tool.regions(tgt).face
    width = tgt.unit / 10
    between = np.zeros_like(hair)
    for y in range(int(tgt.points[1:3, 1].mean()), int(tgt.points[3, 1])):
        xs = np.nonzero(face[y])[0]
        if not len(xs):
            continue
        for edge, step in ((xs.min(), -1), (xs.max(), 1)):
            x = edge + step
            while 0 <= x < face.shape[1] and not hair[y, x] and abs(x - edge) <= width:
                x += step
            if 0 <= x < face.shape[1] and hair[y, x]:
                lo, hi = sorted((edge + step, x - step))
                between[y, lo:hi + 1] = True
    # where the source's own face lay (its hair fell against it there; lower down, by her
    # narrower jaw, her hair stood off her face too)
    src = r.source
    s = tgt.frame.size
    source_face = warp_labels(np.where(src.inside, src.semantic.labels, 0).astype(np.uint8), r.meta["warp"],
                              (s, s)) == FACE
    wall = (tgt.semantic.labels == BACKGROUND) & ~m["removed"] & tgt.inside
    kept = between & source_face & wall & (np.abs(out.astype(int) - tgt.crop.astype(int)).max(axis=2) < 8)
    print("the park's own pixels between cheek and hair:", int(kept.sum()))
    assert kept.sum() < 100


def test_holes_that_touch_the_face_become_hair():
    """``mapping.enclosed_by_hair``: a notch between the hair and the forehead is hair's; a gap
    between strands out in the hair, and a bay open to the scene, are not."""
    from hairtryon.mapping import enclosed_by_hair

    s = 200
    face = np.zeros((s, s), bool)
    face[80:180, 60:140] = True
    alpha = np.zeros((s, s), np.float32)
    alpha[30:80, 40:160] = 1.0  # a cap of hair on the forehead
    alpha[80:120, 40:60] = alpha[80:120, 140:160] = 1.0  # down the temples
    alpha[70:80, 100:120] = 0.0  # a notch between the fringe and the forehead
    alpha[40:46, 70:76] = 0.0  # a gap between strands, out in the hair
    alpha[60:80, 150:160] = 0.0  # a bay open to the scene at the side
    got = enclosed_by_hair(face, alpha, above=150, rim_px=0)
    assert got[70:80, 100:120].all()
    assert not got[40:46, 70:76].any() and not got[60:80, 150:160].any()
    assert not (got & face).any() and not (got & (alpha > 0.5)).any()


def test_fast_marching_leaves_a_clean_wall_above_the_hair(tool, portraits):
    """neutral <- obama: the re-parse calls a band of the rebuilt white wall above the new crop
    hair, and the fill mixed the hair's grey into it (a grey blob, L* about 67 on a wall of 99).
    An artifact that looks like the scene around it and not like either hair is left as the
    rebuild made it: the rebuilt wall above the hair stays as light as the wall (measured: 988
    darker pixels without the rule, none with it)."""
    r = tool(portraits / "ahn-github_neutral.jpeg", portraits / "ageitgey_obama.jpg", refine="classic")
    tgt, out = _frame(r)
    m = r.masks
    hair_rows = np.nonzero((m["hair_alpha"] > 0.5).any(axis=1))[0]
    wall = m["removed"] & (m["hair_alpha"] < 0.02) & (m["mapping_mask"] == BACKGROUND) & tgt.inside
    wall[hair_rows.min() + int(tgt.unit / 20):] = False  # above the top of the new hair
    assert wall.sum() > 2000  # the case is real: her bun's place is rebuilt wall
    lum = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float32) * 100 / 255
    own_wall = (tgt.semantic.labels == BACKGROUND) & ~m["removed"] & tgt.inside
    dark = wall & (lum < np.median(lum[own_wall]) - 15)
    print("rebuilt wall pixels darker than the wall:", int(dark.sum()), "of", int(wall.sum()))
    assert dark.sum() < 200


def test_hair_that_went_behind_the_sources_shoulder_goes_behind_the_targets(tool, portraits):
    """The source's long hair falls behind her right shoulder (the photo's left) and in front of
    her left one, where the bottom of her photo cuts it off. On a man whose shoulders sit higher
    in the frame, the end behind the shoulder would lie over his shirt as a straight cut, and the
    cut-off lock in front would fade out on his chest: his shirt stays in front of both, his own
    pixels, and the hair still comes down to his shoulders on both sides."""
    from hairtryon.framing import grow

    result = tool(portraits / "Azure-Samples_detection2.jpg", portraits / "williamyang1991_i5R8hbZFDdc.jpg",
                  refine="classic")
    tgt, m = result.target, result.masks
    cx, chin = tgt.points[:, 0].mean(), tgt.points[3, 1]
    rows, cols = np.mgrid[:tgt.frame.size, :tgt.frame.size]
    clothes = ((tgt.semantic.labels == NECK) & ~m["removed"] & tgt.inside & ~tool.regions(tgt).neck
               & (rows > chin))
    alpha = m["hair_alpha"]
    hair = alpha > 0.5
    left, right = clothes & (cols < cx), clothes & (cols >= cx)
    assert left.sum() > 20000 and right.sum() > 20000
    covered_left = (left & hair).sum() / left.sum()
    covered_right = (right & hair).sum() / right.sum()
    faded = (clothes & (alpha > 0.05)).sum() / clothes.sum()  # hair thinning out on the shirt
    reach_left = (hair & grow(left, 3) & (cols < cx)).sum()  # the hair comes down to the shoulder
    # on the right, how far the hair's end stays from his shirt (collar and rebuilt parts aside)
    gap_right = cv2.distanceTransform((~right).astype(np.uint8), cv2.DIST_L2, 3)[hair & (cols >= cx)].min()
    print("shirt under the new hair: left", round(covered_left, 4), "right", round(covered_right, 4),
          "any hair", round(faded, 4), "hair at the left shoulder", reach_left,
          "right gap / unit", round(gap_right / tgt.unit, 3))
    # measured 0.013 left (a strand between collar and neck), 0.0 right, 0.009 with any hair, 604,
    # 0.079 (by eye the lock ends at his shoulder line); 0.039, 0.44 and 0.47 when both ends lay
    # on the shirt; 0.013, 0.44 with only the shoulder's rule (the cut-off lock faded mid-chest)
    assert covered_left <= 0.02
    assert covered_right <= 0.02
    assert faded <= 0.05
    assert reach_left >= 100 and gap_right <= tgt.unit / 8


def test_a_lock_that_ended_at_the_sources_shoulder_goes_behind_the_targets():
    """``mapping.hair_behind_body`` on drawn masks: the source's shoulders start at row 150; a
    lock that ends there went behind them and, on a target whose clothes start at row 120, goes
    behind those; a lock that goes on down the source's chest stays in front; the neck is never
    in front of hair."""
    from hairtryon.mapping import hair_behind_body

    s = 200
    src_body = np.zeros((s, s), bool)
    src_body[150:, 20:180] = True
    clothes = np.zeros((s, s), bool)
    clothes[120:, 10:190] = True
    neck = np.zeros((s, s), bool)
    neck[90:200, 85:115] = True
    clothes &= ~neck
    alpha = np.zeros((s, s), np.float32)
    alpha[40:151, 30:60] = 1.0  # ends at the source's shoulder: went behind it
    alpha[40:195, 140:170] = 1.0  # hangs down the source's chest
    alpha[60:140, 80:90] = 1.0  # beside the neck
    got = hair_behind_body(alpha, src_body, clothes, neck, below=80, touch=4, margin=8, feather_px=0)
    assert (got[125:151, 30:60] == 0).all()  # the target's shirt in front of the lock's end
    assert (got[40:118, 30:60] == 1).all()  # the lock above the shirt as it was
    assert (got[40:195, 140:170] == 1).all()  # the front lock untouched
    assert (got[60:140, 80:85] == alpha[60:140, 80:85]).all()
    # the same front lock, where the source photo ends at row 195: the photo cut it off there,
    # and it goes behind the target's clothes instead of ending on them
    photo = np.zeros((s, s), bool)
    photo[:196] = True
    got = hair_behind_body(alpha, src_body, clothes, neck, below=80, touch=4, margin=8, feather_px=0,
                           source_photo=photo)
    assert (got[125:195, 140:170] == 0).all() and (got[40:118, 140:170] == 1).all()
    assert (got[125:151, 30:60] == 0).all() and (got[40:118, 30:60] == 1).all()
    # a photo that ends above the chin cuts nothing there
    photo[:] = False
    photo[:60] = True
    got = hair_behind_body(alpha, src_body, clothes, neck, below=80, touch=4, margin=8, feather_px=0,
                           source_photo=photo)
    assert (got[40:195, 140:170] == 1).all()
