"""Procedural street-scene videos with labels and ground-truth optical flow.

The embedded default dataset: no dataset can be downloaded, and a new user must be able to
run every experiment with nothing but the package. Each clip is a layered 2.5D scene:

    sky (far) < buildings < trees < ground (road, sidewalk, grass) < objects (near)

The camera pans and moves forward. Every layer's image->canvas map is
``c = (p - foe) / S_t(z) + foe + T_t(z)`` with zoom ``S_t(z) = exp(zoom * z * t)`` about the
focus of expansion and pan ``T_t(z) = pan * z * t``: near layers (large depth factor z) move
and grow faster, so layers show parallax. Objects (cars, people, poles with signs) sit in
the ground layer's canvas with their own velocity (cars and people enter, leave and occlude
each other). Because every pixel's layer and map are known, the backward optical flow
(content at p in frame t came from p + flow(p) in frame t-1) is exact.

Content that changes in bursts (off by default; SyntheticConfig's rates, `mvseg data prepare
synthetic --cut-rate/--turn-rate/--lorry-rate/--tunnel-rate`), for keyframe schedulers: hard
scene cuts (another scene from the cut on; the cut frame has no flow, `RenderedClip.flow_valid`
and the `flow_valid` array of gt/*.npz say so), sharp turns (a yaw of the camera shifts the
image by f tan(angle) at every depth, no parallax: `c = (p + yaw_t - foe) / S_t(z) + ...`),
lorries entering close to the camera (up to half the frame) and tunnels (the light falls to a
third within two frames, and comes back); the flow stays exact through all but the cuts.

Class colours are drawn from overlapping distributions (grey roads, grey buildings, grey
cars, greenish cars, grey-blue sky, ...), so a per-pixel colour classifier cannot separate
them: shape (cars, people), texture (windows, paving tiles, lane marks, foliage) and context
(sky above buildings above the road) are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole", "sign")
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE, SIGN = range(len(CLASSES))
IGNORE_INDEX = 255
FPS = 17.0  # the clips' frame rate (Cityscapes' video is 17 fps)
# Cityscapes-like colours, for visualisation only.
PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (70, 130, 180),
    (0, 0, 142),
    (220, 20, 60),
    (153, 153, 153),
    (220, 220, 0),
)


@dataclass
class SyntheticConfig:
    """Size and dynamics of the generated clips (defaults suit 2 CPU cores)."""

    height: int = 128
    width: int = 256
    frames: int = 30
    max_pan: float = 1.6  # canvas pixels per frame at depth factor 1
    max_zoom: float = 0.012  # log-scale per frame at depth factor 1 (forward motion)
    cars: tuple[int, int] = (2, 6)
    people: tuple[int, int] = (1, 5)
    poles: tuple[int, int] = (1, 4)
    illumination: float = 0.15  # amplitude of the global brightness change
    noise: float = 3.0  # per-frame sensor noise (std, grey levels)
    # Stop-and-go driving: the camera changes speed at this many random frames of a clip (each
    # stretch stopped, slow, cruising or fast), so how fast the content changes varies within a
    # clip. 0 (default): constant speed, every clip as before.
    speed_changes: int = 0
    # Uneven content: events that change the segmentation in bursts, each drawn at random frames
    # of a clip (a Poisson count at these rates per 100 frames, from generators of their own, so
    # the scene itself stays what its seed gives). 0 (default): none, every clip as before.
    cut_rate: float = 0.0  # hard scene cuts: another scene from that frame on, no flow across it
    turn_rate: float = 0.0  # sharp turns: the camera yaws by about turn_degrees within turn_frames
    lorry_rate: float = 0.0  # a lorry passes close to the camera, covering up to half the frame
    tunnel_rate: float = 0.0  # the light falls to tunnel_gain within 2 frames (a tunnel), then comes back
    turn_degrees: float = 45.0
    turn_frames: int = 12  # 45 degrees in 12 frames at 17 fps: about 64 degrees a second
    fov_degrees: float = 60.0  # horizontal field of view: a yaw of a degrees shifts f * tan(a) pixels
    tunnel_gain: float = 0.3


# the event settings: left out of a dataset's generator record at their defaults (datasets made
# before they existed stay valid)
EVENT_FIELDS = (
    "speed_changes",
    "cut_rate",
    "turn_rate",
    "lorry_rate",
    "tunnel_rate",
    "turn_degrees",
    "turn_frames",
    "fov_degrees",
    "tunnel_gain",
)


@dataclass
class RenderedClip:
    """One generated clip in memory, with what a camera cannot give: every frame's label and exact flow."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    labels: np.ndarray  # (T, H, W) uint8
    flow: np.ndarray  # (T, 2, H, W) float32 backward flow, frame 0 is zero
    objects: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (T, H, W) int16 object id, -1 = static layer
    cuts: tuple[int, ...] = ()  # frames that start a new scene: their flow is undefined (stored as 0)

    @property
    def flow_valid(self) -> np.ndarray:
        """(T,) bool: frame t's backward flow exists (False at a scene cut)."""
        valid = np.ones(len(self.frames), bool)
        valid[list(self.cuts)] = False
        return valid


# ----------------------------------------------------------------------------- textures


#: The scene's event streams: each event kind draws from its own generator, seeded by the clip's
#: seed and the stream's key, so switching one kind on or off leaves the scene and every other
#: event what the seed gives. Keys: distinct primes (the values every dataset was generated with).
EVENT_STREAMS = {"scene_cuts": 104701, "tunnels": 104711, "lorries": 104717, "turns": 104723, "speed_changes": 104729}


def event_rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one event stream of a clip (`EVENT_STREAMS`)."""
    return np.random.default_rng([seed, EVENT_STREAMS[stream]])


#: A clip's seed: the dataset's seed times CLIP_SEED_STRIDE, plus its stream's offset and its
#: index in the stream. Streams: the dataset's splits, and the rehearsal layouts of
#: mvseg.data.layouts (Cityscapes: 50,000 apart per split; CamVid).
CLIP_SEED_STRIDE = 1_000_003
CLIP_SEED_OFFSET = {"train": 0, "val": 100_000, "cityscapes_layout": 50_000, "camvid_layout": 70_000}


def clip_seed(seed: int, stream: str, index: int) -> int:
    """The seed of clip `index` of `stream` (a split, or a layout) made with `seed`."""
    return seed * CLIP_SEED_STRIDE + CLIP_SEED_OFFSET[stream] + index


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] of size (h, w) with features about `cell` pixels wide."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    return _bilinear(g, x[None, :].repeat(h, 0), y[:, None].repeat(w, 1), wrap=False)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, wrap: bool = True) -> np.ndarray:
    """Bilinear lookup of img (H, W[, C]) at float coordinates (wrapping or clamping)."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    if wrap:
        xa, xb, ya, yb = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    else:
        xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
        ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = img[ya, xa] * (1 - fx) + img[ya, xb] * fx
    bot = img[yb, xa] * (1 - fx) + img[yb, xb] * fx
    return top * (1 - fy) + bot * fy


class _Texture:
    """A tileable multi-scale noise texture, looked up at canvas coordinates."""

    def __init__(self, rng: np.random.Generator, fine: float, coarse: float, size: int = 128):
        self.tex = 0.6 * _noise(rng, size, size, fine) + 0.4 * _noise(rng, size, size, coarse)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _bilinear(self.tex, x, y)


def _colour(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Base colours; distributions overlap across classes on purpose."""
    grey = rng.uniform(70, 190)
    tint = rng.normal(0, 8, 3)
    if kind == "grey":
        return np.clip(grey + tint, 0, 255)
    if kind == "sky":
        return np.clip(np.array([150, 170, 200]) * rng.uniform(0.75, 1.15) + rng.normal(0, 15, 3), 0, 255)
    if kind == "green":
        return np.clip(np.array([rng.uniform(50, 120), rng.uniform(90, 160), rng.uniform(40, 110)]), 0, 255)
    if kind == "building":
        choice = rng.integers(4)
        base = ([grey] * 3, [170, 140, 110], [150, 80, 60], [190, 185, 170])[choice]
        return np.clip(np.array(base, float) * rng.uniform(0.8, 1.1) + tint, 0, 255)
    if kind == "vivid":  # cars, clothes, signs: any of grey, green, blue, red, white, yellow
        choice = rng.integers(6)
        base = ([grey] * 3, [70, 130, 60], [60, 90, 170], [180, 40, 40], [225, 225, 225], [210, 190, 50])[choice]
        return np.clip(np.array(base, float) + rng.normal(0, 15, 3), 0, 255)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- scene


@dataclass
class _Camera:
    foe: tuple[float, float]
    pan: float
    zoom: float
    sway: float
    # stop-and-go: (frame, travel) knots of a piecewise-linear travel(t), the distance the
    # camera has moved in units of its cruising speed; None: travel(t) = t (constant speed)
    knots: tuple[np.ndarray, np.ndarray] | None = None
    # sharp turns: (frame, pixels) knots of the piecewise-linear image shift yaw(t) a rotation of
    # the camera gives; a rotation moves every depth alike (no parallax); None: no turns
    turns: tuple[np.ndarray, np.ndarray] | None = None

    def yaw(self, t: float) -> float:
        return 0.0 if self.turns is None else float(np.interp(t, *self.turns))

    def travel(self, t: float) -> float:
        if self.knots is None:
            return t
        ts, ds = self.knots
        if t < ts[0]:  # before the clip (the flow of frame 0): the first stretch's speed
            return float(ds[0] + (t - ts[0]) * (ds[1] - ds[0]) / (ts[1] - ts[0]))
        return float(np.interp(t, ts, ds))

    def scale(self, z: float, t: float) -> float:
        return math.exp(self.zoom * z * self.travel(t))

    def shift(self, z: float, t: float) -> tuple[float, float]:
        d = self.travel(t)
        return self.pan * z * d, self.sway * z * math.sin(0.3 * d)

    def to_canvas(self, z: float, t: float, x: np.ndarray, y: np.ndarray):
        s, (tx, ty) = self.scale(z, t), self.shift(z, t)
        r = self.yaw(t)  # the image moves by -yaw at every depth
        return (x + r - self.foe[0]) / s + self.foe[0] + tx, (y - self.foe[1]) / s + self.foe[1] + ty

    def to_image(self, z: float, t: float, cx, cy):
        s, (tx, ty) = self.scale(z, t), self.shift(z, t)
        return ((cx - self.foe[0] - tx) * s + self.foe[0] - self.yaw(t), (cy - self.foe[1] - ty) * s + self.foe[1])


@dataclass
class _Object:
    kind: str  # car | person | pole
    x: float  # anchor (bottom centre) in ground canvas
    y: float
    vx: float  # canvas pixels per frame
    half_w: float  # canvas pixels
    half_h: float
    colour: np.ndarray
    colour2: np.ndarray
    texture: _Texture
    has_sign: bool = False


def _shape(obj: _Object, u: np.ndarray, v: np.ndarray):
    """Label and shading of an object at local coords (u right, v down; [-1, 1] box)."""
    lab = np.full(u.shape, -1, np.int16)
    shade = np.ones(u.shape, np.float32)
    part = np.zeros(u.shape, bool)  # second colour (windows, clothes, sign plate)
    if obj.kind == "car":
        body = (np.abs(u) < 1.0) & (v > -0.15) & (v < 0.6)
        cabin = (v > -0.75) & (v <= -0.15) & (np.abs(u) < 0.55 + 0.35 * (v + 0.75) / 0.6)
        wheels = ((np.abs(u) - 0.6) ** 2 + ((v - 0.62) / 1.0) ** 2) < 0.3**2
        lab[body | cabin | wheels] = CAR
        part |= cabin & (np.abs(u) < 0.45 + 0.3 * (v + 0.75) / 0.6) & (v > -0.65)  # windows
        shade[wheels] = 0.25
    elif obj.kind == "person":
        head = (u**2 + (v + 0.82) ** 2) < 0.17**2 * 1.0
        torso = (np.abs(u) < 0.32) & (v > -0.66) & (v < 0.1)
        legs = (np.abs(np.abs(u) - 0.16) < 0.13) & (v >= 0.1) & (v < 1.0)
        lab[head | torso | legs] = PERSON
        part |= legs
        shade[head] = 1.15
    else:  # pole, optionally with a sign plate near the top
        pole = (np.abs(u) < 0.09) & (v > -1.0) & (v < 1.0)
        lab[pole] = POLE
        if obj.has_sign:
            plate = ((u / 0.45) ** 2 + ((v + 0.7) / 0.2) ** 2) < 1
            lab[plate] = SIGN
            part |= plate
    return lab, shade, part


class StreetScene:
    """One clip's scene; `render(t)` gives (image float [H,W,3], label, flow [2,H,W], object id)."""

    def __init__(self, seed: int, cfg: SyntheticConfig):
        self.cfg = cfg
        rng = np.random.default_rng(seed)
        h, w = cfg.height, cfg.width
        self.horizon = h * rng.uniform(0.38, 0.5)
        foe = (w * rng.uniform(0.35, 0.65), self.horizon)
        self.cam = _Camera(
            foe=foe,
            pan=rng.uniform(-cfg.max_pan, cfg.max_pan),
            zoom=rng.uniform(0.2, 1.0) * cfg.max_zoom,
            sway=rng.uniform(0, 0.6),
        )
        if cfg.speed_changes > 0:  # its own generator: the scene itself stays what this seed gives
            self.cam.knots = stop_and_go(event_rng(seed, "speed_changes"), cfg.frames, cfg.speed_changes)
        if cfg.turn_rate > 0:
            self.cam.turns = sharp_turns(event_rng(seed, "turns"), cfg)
        self.tunnels = tunnels(event_rng(seed, "tunnels"), cfg) if cfg.tunnel_rate > 0 else []
        self._background(rng)  # the draws in this order: a seed gives the scene it always gave
        self.objects: list[_Object] = self._street_objects(rng, foe)
        if cfg.lorry_rate > 0:
            self.objects += self._lorries(event_rng(seed, "lorries"))
        self.light_amp = rng.uniform(0, cfg.illumination)
        self.light_phase = rng.uniform(0, 2 * np.pi)
        self.light_freq = rng.uniform(0.5, 1.5) / cfg.frames
        self.tint = 1 + rng.normal(0, 0.04, 3)

    def _background(self, rng: np.random.Generator) -> None:
        """Sky, skyline, trees and ground (road, sidewalk, grass) of the scene."""
        cfg = self.cfg
        h, w = cfg.height, cfg.width
        # depth factors
        self.z_sky, self.z_build, self.z_tree, self.z_ground = 0.03, 0.35, 0.6, 1.0
        self.sky_top, self.sky_bottom = _colour(rng, "sky"), _colour(rng, "sky") * 1.1
        self.sky_tex = _Texture(rng, 20, 60)
        # buildings: a skyline of blocks along the canvas x axis
        span = (-1.5 * w, 2.5 * w)
        xs = [span[0]]
        while xs[-1] < span[1]:
            xs.append(xs[-1] + rng.uniform(0.12, 0.35) * w)
        self.b_edges = np.array(xs)
        nb = len(xs) - 1
        self.b_tops = self.horizon - rng.uniform(0.15, 0.45, nb) * h
        self.b_cols = np.stack([_colour(rng, "building") for _ in range(nb)])
        self.b_win = rng.uniform(5, 9, nb)  # window spacing
        self.b_gap = rng.random(nb) < 0.2  # gaps in the skyline (sky shows through)
        self.b_tex = _Texture(rng, 3, 18)
        # trees: canopies above the horizon line
        nt = int(rng.integers(2, 7))
        self.trees = [
            (
                rng.uniform(-0.5 * w, 1.5 * w),
                self.horizon - rng.uniform(0.05, 0.2) * h,
                rng.uniform(0.06, 0.14) * w,
                rng.uniform(0.08, 0.18) * h,
                _colour(rng, "green"),
            )
            for _ in range(nt)
        ]
        self.t_tex = _Texture(rng, 2.0, 8)
        # ground: road wedge between two slopes through the focus of expansion
        self.road_slope = rng.uniform(0.9, 1.8)  # |x - foe_x| < slope * (y - horizon)
        self.walk_slope = self.road_slope * rng.uniform(1.5, 2.5)
        self.grass = rng.random() < 0.5  # beyond the sidewalk: grass or more sidewalk
        self.road_col, self.walk_col = _colour(rng, "grey"), _colour(rng, "grey")
        self.grass_col = _colour(rng, "green")
        self.road_tex, self.walk_tex = _Texture(rng, 2.0, 12), _Texture(rng, 4, 20)
        self.tile = rng.uniform(6, 12)

    def _street_objects(self, rng: np.random.Generator, foe: tuple[float, float]) -> list[_Object]:
        """Cars on the road, people on the sidewalks, poles (with signs) beside them."""
        cfg = self.cfg
        h = cfg.height
        objects: list[_Object] = []
        gy = lambda lo, hi: self.horizon + rng.uniform(lo, hi) * (h - self.horizon)  # noqa: E731
        for _ in range(int(rng.integers(*cfg.cars))):
            y = gy(0.25, 1.0)
            depth = y - self.horizon
            lane = rng.uniform(-0.8, 0.8) * self.road_slope * depth
            speed = rng.choice([0.0, rng.uniform(0.6, 2.5)]) * rng.choice([-1, 1])
            x = foe[0] + lane - speed * cfg.frames * rng.uniform(0.2, 0.8)
            hw = 0.45 * depth + 4
            objects.append(
                _Object(
                    "car",
                    x,
                    y,
                    speed,
                    hw,
                    0.55 * hw,
                    _colour(rng, "vivid"),
                    np.array([60, 70, 80.0]) * rng.uniform(0.6, 1.3),
                    _Texture(rng, 2.5, 10),
                )
            )
        for _ in range(int(rng.integers(*cfg.people))):
            y = gy(0.2, 1.0)
            depth = y - self.horizon
            side = rng.choice([-1, 1])
            x = foe[0] + side * rng.uniform(1.05, 1.4) * self.road_slope * depth
            hh = 0.3 * depth + 3
            objects.append(
                _Object(
                    "person",
                    x,
                    y,
                    rng.uniform(-0.8, 0.8),
                    0.35 * hh,
                    hh,
                    _colour(rng, "vivid"),
                    _colour(rng, "vivid"),
                    _Texture(rng, 2.0, 6),
                )
            )
        for _ in range(int(rng.integers(*cfg.poles))):
            y = gy(0.15, 0.9)
            depth = y - self.horizon
            x = foe[0] + rng.choice([-1, 1]) * rng.uniform(1.05, 1.3) * self.road_slope * depth
            hh = 0.8 * depth + 6
            objects.append(
                _Object(
                    "pole",
                    x,
                    y,
                    0.0,
                    0.12 * hh,
                    hh,
                    _colour(rng, "grey") * 0.7,
                    _colour(rng, "vivid"),
                    _Texture(rng, 2.0, 6),
                    has_sign=rng.random() < 0.7,
                )
            )
        return objects

    def _lorries(self, rng: np.random.Generator) -> list[_Object]:
        """Large vehicles that enter from a side close to the camera (near the bottom of the
        frame, up to half its width) at random frames and cross it in 12-30 frames."""
        cfg, h, w = self.cfg, self.cfg.height, self.cfg.width
        out = []
        for t0 in np.sort(rng.integers(0, cfg.frames, rng.poisson(cfg.lorry_rate * cfg.frames / 100))):
            y = self.horizon + rng.uniform(0.9, 1.0) * (h - self.horizon)  # ground canvas row near the camera
            hw = rng.uniform(0.2, 0.25) * w  # half width: 40-50 % of the frame
            side = rng.choice([-1, 1])  # +1: enters on the left, drives right
            vx = side * (w + 2 * hw) / rng.uniform(12, 30)
            edge = self.cam.to_canvas(self.z_ground, float(t0), np.array(0.0 if side > 0 else w), np.array(y))[0]
            x0 = float(edge) - side * hw - vx * t0  # its near end at the frame's edge at t0
            out.append(
                _Object(
                    "car",
                    x0,
                    y,
                    vx,
                    hw,
                    0.8 * hw,
                    _colour(rng, "vivid"),
                    np.array([60, 70, 80.0]) * rng.uniform(0.6, 1.3),
                    _Texture(rng, 2.5, 10),
                )
            )
        return out

    def gain(self, t: int) -> float:
        """The light's gain at frame t: the slow illumination drift times any tunnel's."""
        g = 1 + self.light_amp * math.sin(2 * math.pi * self.light_freq * t + self.light_phase)
        for t_in, t_out in self.tunnels:  # within 2 frames down to tunnel_gain, and back
            depth = min(max((t - t_in + 1) / 2, 0.0), 1.0) * min(max((t_out + 1 - t) / 2, 0.0), 1.0)
            g *= 1 - (1 - self.cfg.tunnel_gain) * depth
        return g

    # -- static layers at canvas coords ------------------------------------------------

    def _sky(self, cx, cy):
        a = np.clip(cy / max(self.horizon, 1), 0, 1)[..., None]
        col = self.sky_top * (1 - a) + self.sky_bottom * a
        return col + 25 * self.sky_tex(cx, cy)[..., None], np.full(cx.shape, SKY, np.int16)

    def _buildings(self, cx, cy):
        i = np.clip(np.searchsorted(self.b_edges, cx) - 1, 0, len(self.b_tops) - 1)
        cover = (cy > self.b_tops[i]) & ~self.b_gap[i]
        col = self.b_cols[i].astype(np.float32)
        sp = self.b_win[i]
        wx = np.mod(cx - self.b_edges[i], sp) / sp
        wy = np.mod(cy - self.b_tops[i], sp * 1.3) / (sp * 1.3)
        window = (wx > 0.3) & (wx < 0.75) & (wy > 0.3) & (wy < 0.8) & (cy > self.b_tops[i] + 3)
        col = col * np.where(window, 0.45, 1.0)[..., None] + 30 * self.b_tex(cx, cy)[..., None]
        return col, np.where(cover, BUILDING, -1).astype(np.int16)

    def _trees(self, cx, cy):
        lab = np.full(cx.shape, -1, np.int16)
        col = np.zeros(cx.shape + (3,), np.float32)
        for tx, ty, rx, ry, c in self.trees:
            inside = ((cx - tx) / rx) ** 2 + ((cy - ty) / ry) ** 2 < 1
            trunk = (np.abs(cx - tx) < 0.12 * rx) & (cy > ty) & (cy < self.horizon + 2)
            lab[inside | trunk] = VEGETATION
            col[inside] = c
            col[trunk & ~inside] = c * 0.5
        col += 45 * self.t_tex(cx, cy)[..., None]
        return col, lab

    def _ground(self, cx, cy):
        fx, fy = self.cam.foe
        depth = cy - fy
        cover = depth > 0
        dx = np.abs(cx - fx)
        road = cover & (dx < self.road_slope * depth)
        walk = cover & ~road
        if self.grass:
            walk &= dx < self.walk_slope * depth
        lab = np.where(road, ROAD, np.where(walk, SIDEWALK, np.where(cover, VEGETATION, -1)))
        col = np.where(road[..., None], self.road_col, np.where(walk[..., None], self.walk_col, self.grass_col))
        # perspective-consistent marks: dashes along the centre line, tiles on the sidewalk
        d = np.maximum(depth, 1e-3)
        logd = np.log(d)
        dash = road & (dx < 0.04 * depth + 0.3) & (np.mod(logd * 6, 1) < 0.5)
        tiles = walk & ((np.mod(logd * 12, 1) < 0.12) | (np.mod(dx / d * 6, 1) < 0.1))
        col = np.where(dash[..., None], 225.0, col) * np.where(tiles, 0.75, 1.0)[..., None]
        tex = np.where(road, 22 * self.road_tex(cx, cy), 30 * self.walk_tex(cx, cy))
        return col + tex[..., None], lab.astype(np.int16)

    # -- frame -------------------------------------------------------------------------

    def render(self, t: int):
        cfg, cam = self.cfg, self.cam
        h, w = cfg.height, cfg.width
        py, px = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.zeros((h, w, 3), np.float32)
        lab = np.full((h, w), IGNORE_INDEX, np.int16)
        flow = np.zeros((2, h, w), np.float32)
        obj_id = np.full((h, w), -1, np.int16)
        for z, layer in (
            (self.z_sky, self._sky),
            (self.z_build, self._buildings),
            (self.z_tree, self._trees),
            (self.z_ground, self._ground),
        ):
            cx, cy = cam.to_canvas(z, t, px, py)
            col, ids = layer(cx, cy)
            m = ids >= 0
            img[m], lab[m] = col[m], ids[m]
            qx, qy = cam.to_image(z, t - 1, cx, cy)
            flow[0][m], flow[1][m] = (qx - px)[m], (qy - py)[m]
        # objects, far to near (painter's order by ground depth)
        for k in sorted(range(len(self.objects)), key=lambda i: self.objects[i].y):
            self._draw(k, t, px, py, img, lab, flow, obj_id)
        img = img * self.gain(t) * self.tint
        return img, lab.astype(np.uint8), flow, obj_id

    def _draw(self, k, t, px, py, img, lab, flow, obj_id):
        o, cam, z = self.objects[k], self.cam, self.z_ground

        def placement(tt):  # anchor in the image and the pixels per local unit
            ax, ay = cam.to_image(z, tt, o.x + o.vx * tt, o.y)
            s = cam.scale(z, tt)
            return ax, ay - o.half_h * s, o.half_w * s, o.half_h * s  # centre = anchor - half height

        cxi, cyi, sx, sy = placement(t)
        h, w = lab.shape
        x0, x1 = int(max(cxi - sx - 1, 0)), int(min(cxi + sx + 2, w))
        y0, y1 = int(max(cyi - sy - 1, 0)), int(min(cyi + sy * 1.1 + 2, h))
        if x0 >= x1 or y0 >= y1:
            return
        bx, by = px[y0:y1, x0:x1], py[y0:y1, x0:x1]
        u, v = (bx - cxi) / sx, (by - cyi) / sy
        ids, shade, part = _shape(o, u, v)
        m = ids >= 0
        if not m.any():
            return
        col = np.where(part[..., None], o.colour2, o.colour) * shade[..., None]
        col = col + 28 * o.texture(u * 12, v * 12)[..., None]
        pcx, pcy, psx, psy = placement(t - 1)
        fx, fy = pcx + u * psx - bx, pcy + v * psy - by
        sl = (slice(y0, y1), slice(x0, x1))
        img[sl][m], lab[sl][m], obj_id[sl][m] = col[m], ids[m], k
        flow[0][sl][m], flow[1][sl][m] = fx[m], fy[m]


SPEEDS = (0.0, 0.5, 1.0, 2.0)  # stopped, slow, cruising, fast (x the clip's cruising speed)


def stop_and_go(rng: np.random.Generator, frames: int, changes: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots (frame, travel) of a camera that changes speed at `changes` distinct random frames
    (1 .. frames-1); each stretch's speed is drawn from SPEEDS, different from the last one."""
    cuts = np.sort(rng.choice(np.arange(1, frames), size=min(changes, frames - 1), replace=False))
    ts = np.concatenate([[0], cuts, [frames]]).astype(np.float64)
    speeds = [float(rng.choice(SPEEDS))]
    for _ in cuts:
        speeds.append(float(rng.choice([s for s in SPEEDS if s != speeds[-1]])))
    return ts, np.concatenate([[0.0], np.cumsum(np.diff(ts) * np.array(speeds))])


def sharp_turns(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(frame, pixels) knots of the camera's yaw: Poisson-many turns of turn_degrees x U(0.7, 1.3)
    each within turn_frames, starting at random frames, one at a time; a turn heads back towards
    the start when the view has turned more than half a frame away (the canvas is finite)."""
    f = cfg.width / (2 * math.tan(math.radians(cfg.fov_degrees) / 2))  # focal length, pixels
    ts, ps = [0.0], [0.0]
    for t0 in np.sort(rng.integers(0, cfg.frames, rng.poisson(cfg.turn_rate * cfg.frames / 100))):
        t0 = max(float(t0), ts[-1])
        px = f * math.tan(math.radians(cfg.turn_degrees * rng.uniform(0.7, 1.3)))
        sign = -np.sign(ps[-1]) if abs(ps[-1]) > cfg.width / 2 else rng.choice([-1, 1])
        ts += [t0, t0 + cfg.turn_frames]
        ps += [ps[-1], ps[-1] + sign * px]
    return np.array(ts), np.array(ps)


def tunnels(rng: np.random.Generator, cfg: SyntheticConfig) -> list[tuple[int, int]]:
    """(entry, exit) frames of Poisson-many tunnels, each 8-30 frames long."""
    out: list[tuple[int, int]] = []
    for t in np.sort(rng.integers(0, cfg.frames, rng.poisson(cfg.tunnel_rate * cfg.frames / 100))):
        length = int(rng.integers(8, 31))
        if not out or t > out[-1][1] + 2:  # one tunnel at a time
            out.append((int(t), int(t) + length))
    return out


def scene_cuts(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[int, ...]:
    """Frames (1 .. frames-1, distinct) where a hard cut starts another scene."""
    n = min(rng.poisson(cfg.cut_rate * cfg.frames / 100), cfg.frames - 1)
    return tuple(int(t) for t in np.sort(rng.choice(np.arange(1, cfg.frames), n, replace=False)))


def render_clip(seed: int, cfg: SyntheticConfig | None = None) -> RenderedClip:
    """Render one clip deterministically from `seed`; with scene cuts, each cut starts another
    scene (its own seed) at its time 0, and the cut frame's flow is undefined (zero, see
    RenderedClip.flow_valid)."""
    cfg = cfg or SyntheticConfig()
    cuts = scene_cuts(event_rng(seed, "scene_cuts"), cfg) if cfg.cut_rate > 0 else ()
    starts = (0,) + cuts
    scenes = [
        StreetScene(seed if i == 0 else int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), cfg)
        for i in range(len(starts))
    ]
    rng = np.random.default_rng(seed + 7919)
    frames, labels, flows, ids = [], [], [], []
    for t in range(cfg.frames):
        i = int(np.searchsorted(starts, t, side="right")) - 1
        img, lab, flow, oid = scenes[i].render(t - starts[i])
        img = img + rng.normal(0, cfg.noise, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(lab)
        flows.append(flow if t > 0 and t not in cuts else np.zeros_like(flow))
        ids.append(oid)
    return RenderedClip(np.stack(frames), np.stack(labels), np.stack(flows), np.stack(ids), cuts)


# ----------------------------------------------------------------------------- dataset


def _write_clip(job: tuple) -> tuple[str, str, np.ndarray, np.ndarray, int]:
    """Render, encode and store one clip (runs in a worker process)."""
    from pathlib import Path

    from mvseg.data.folder import write_clip

    root, split, name, seed, cfg, gop, crf, annotated, with_gt, scenecut = job
    root = Path(root)
    clip = render_clip(seed, cfg)
    write_clip(
        root,
        split,
        name,
        clip.frames,
        {t: clip.labels[t] for t in annotated},
        gop=gop,
        fps=FPS,
        crf=crf,
        scenecut=scenecut,
    )
    if with_gt:
        gt = root / "gt" / split / f"{name}.npz"
        gt.parent.mkdir(parents=True, exist_ok=True)
        tmp = gt.with_name(gt.stem + ".part.npz")
        extra = {"flow_valid": clip.flow_valid} if cfg.cut_rate > 0 else {}  # no key (same bytes) without cuts
        np.savez_compressed(tmp, labels=clip.labels, flow=clip.flow.astype(np.float16), objects=clip.objects, **extra)
        tmp.replace(gt)
    px = clip.frames.reshape(-1, 3).astype(np.float64) / 255.0
    return split, name, px.sum(0), (px**2).sum(0), len(px)


def _generator_meta(
    cfg: SyntheticConfig,
    seed: int,
    gop: int,
    crf: float,
    annotated: tuple[int, ...],
    train_clips: int,
    val_clips: int,
    scenecut: int,
) -> dict:
    """dataset.json's "generator": what made the dataset (a resumed run must match it)."""
    generator = {
        "seed": seed,
        "gop": gop,
        "crf": crf,
        "annotated": list(annotated),
        "train_clips": train_clips,
        "val_clips": val_clips,
        "config": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(cfg).items()
            if not (k in EVENT_FIELDS and v == getattr(SyntheticConfig, k))
        },
    }
    if scenecut:  # only when on: datasets made before the option keep their metadata (and stay resumable)
        generator["scenecut"] = scenecut
    return generator


def make_synthetic_dataset(
    root: str,
    *,
    train_clips: int = 24,
    val_clips: int = 12,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    gop: int | None = None,
    crf: float = 18.0,
    annotated: tuple[int, ...] = (9, 19),
    with_gt: bool = True,
    workers: int = 2,
    progress: bool = True,
    scenecut: int = 0,
) -> dict:
    """Generate the synthetic street dataset in mvseg's folder layout and return its metadata.

    Layout: ``dataset.json``, ``videos/{split}/{clip}.mp4`` (H.264, GOP `gop`, default the
    clip length so any frame can serve as a keyframe with exact MV composition),
    ``labels/{split}/{clip}/{frame:06d}.png`` for the annotated frames (like Cityscapes'
    20th frame of 30) and ``gt/{split}/{clip}.npz`` (labels and backward flow of every
    frame). Resumable: clips already written are kept; ``dataset.json`` is written last.
    `scenecut` > 0 encodes with x264's scene-cut detection on (an I-frame at a detected cut, `gop`
    the longest GOP), as a camera or an editor's export would; 0 (the default) never.
    """
    import json
    import os
    from pathlib import Path

    from tqdm import tqdm

    from mvseg.data.folder import write_dataset_json

    cfg = config or SyntheticConfig()
    gop = gop or cfg.frames
    bad = [t for t in annotated if not 0 <= t < cfg.frames]
    if bad:
        raise ValueError(f"annotated frames {bad} outside a clip of {cfg.frames} frames")
    rootp = Path(root)
    meta_path = rootp / "dataset.json"
    generator = _generator_meta(cfg, seed, gop, crf, annotated, train_clips, val_clips, scenecut)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("generator") == generator:
            return meta
        raise FileExistsError(
            f"{rootp}: holds a synthetic dataset made with other settings; choose another --out or delete it"
        )
    splits = {"train": train_clips, "val": val_clips}
    jobs = [
        (str(rootp), split, f"clip_{i:04d}", clip_seed(seed, split, i), cfg, gop, crf, tuple(annotated))
        + (with_gt, scenecut)
        for split, n in splits.items()
        for i in range(n)
    ]  # _write_clip's arguments
    s1, s2, count = np.zeros(3), np.zeros(3), 0
    workers = max(1, min(workers, os.cpu_count() or 1, len(jobs)))

    def results():
        if workers == 1:
            yield from map(_write_clip, jobs)
            return
        # spawned processes (see in_workers); a worker that dies is an error, not a hang
        from mvseg.data.prepare import in_workers

        yield from in_workers(_write_clip, jobs, workers)

    for split, _, a, b, n in tqdm(results(), total=len(jobs), desc="synthetic clips", disable=not progress):
        if split == "train":
            s1, s2, count = s1 + a, s2 + b, count + n
    mean = s1 / max(count, 1)
    std = np.sqrt(np.maximum(s2 / max(count, 1) - mean**2, 1e-12))
    return write_dataset_json(
        rootp,
        {
            "name": "synthetic",
            "classes": list(CLASSES),
            "palette": [list(c) for c in PALETTE],
            "ignore_index": IGNORE_INDEX,
            "size": [cfg.height, cfg.width],
            "fps": FPS,
            "mean": mean.round(4).tolist(),
            "std": std.round(4).tolist(),
            "splits": {
                split: {f"clip_{i:04d}": {"frames": cfg.frames, "annotated": list(annotated)} for i in range(n)}
                for split, n in splits.items()
            },
            "generator": generator,
        },
    )
