"""``nn.Conv1d`` / ``nn.Conv2d`` (zero padding; any stride, padding, dilation, groups): six exact algorithms; and
``nn.ConvTranspose1d`` / ``nn.ConvTranspose2d`` through their adjoint convolution (:class:`ConvTransposeRule`).

A convolution is a matmul layer over output positions (:mod:`.matmul`): the unfolded forms copy the input
``kh * kw`` times into columns (direct: the fastest form for 3x3 image stems and one-channel inputs; ghost: for
maps of a few positions). Besides them:

* shifted direct (unit stride): with the output gradient laid out on the padded input's width, the inputs
  read at kernel offset ``(i, j)`` are a contiguous range of the flattened padded input, so ``g_i`` is
  ``kh * kw`` matmuls against shifted views, without any copy of the input;
* shifted ghost (unit stride): the position Gram matrix of the columns is a sum of shifted blocks of the
  pixel Gram matrix ``X^T X`` of the input, placed in the padded input's layout;
* grouped direct: the framework's own weight-gradient kernel with the batch folded into the groups;
* forward direct: the framework's forward convolution of the input with the output gradient as kernel, the batch
  folded into the groups and each group's input channels into the batch (on a CPU several times faster than the
  weight-gradient kernels for depthwise layers, and the fastest form for 7x7 image stems).

Dot products of the ghost forms run the layer's forward with the directions' weights. Which algorithm
runs is decided by a cost estimate alone (:func:`estimates`), never by timing, so that every run and every
rank computes the same scores to the last bit.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.grad
from torch import Tensor

from lightning_dynamical.scoring.layers.base import (
    MEMORY_COST,
    Directions,
    LayerRule,
    add_statistics,
    bias_statistics,
    channels_last,
    matvecs,
    row_dots,
    sqnorm,
)
from lightning_dynamical.scoring.layers.matmul import (
    direct_statistics,
    ghost_norm,
    ghost_statistics,
    grouped_weights,
    slowdown,
)
from lightning_dynamical.scoring.layers.scratch import derived


class ConvGeometry:
    """A convolution's input as a 2-D batch with its padding, kernel, stride, dilation and output size."""

    def __init__(self, module: Any, a: Tensor) -> None:
        one_d = module.weight.ndim == 3
        self.x = a.unsqueeze(2) if one_d else a
        self.kernel = (1, *module.kernel_size) if one_d else tuple(module.kernel_size)
        self.stride = (1, *module.stride) if one_d else tuple(module.stride)
        self.dilation = (1, *module.dilation) if one_d else tuple(module.dilation)
        self.pads = _padding(module, one_d)
        self.groups = module.groups
        self.out_channels = module.out_channels
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        self.batch, self.channels = self.x.shape[:2]
        self.out_h = (self.hp - dh * (kh - 1) - 1) // sh + 1
        self.out_w = (self.wp - dw * (kw - 1) - 1) // sw + 1
        self.positions = self.out_h * self.out_w

    @property
    def hp(self) -> int:
        """Padded input height."""
        return self.x.shape[2] + self.pads[0] + self.pads[1]

    @property
    def wp(self) -> int:
        """Padded input width."""
        return self.x.shape[3] + self.pads[2] + self.pads[3]

    @property
    def grid(self) -> int:
        """Output positions on the padded width (the shifted forms' layout)."""
        return self.out_h * self.wp

    @property
    def shiftable(self) -> bool:
        """Whether the shifted forms apply (unit stride, a kernel larger than 1x1)."""
        return self.stride == (1, 1) and self.kernel != (1, 1)

    @functools.cached_property
    def flat(self) -> Tensor:
        """Zero-padded input flattened per channel, ``(B, C, hp * wp + tail)`` (tail for the last offset)."""
        top, _, left, _ = self.pads
        tail = (self.kernel[1] - 1) * self.dilation[1]
        buf = self.x.new_zeros(self.batch, self.channels, self.hp * self.wp + tail)
        inner = buf[:, :, : self.hp * self.wp].view(self.batch, self.channels, self.hp, self.wp)
        inner[:, :, top: top + self.x.shape[2], left: left + self.x.shape[3]] = self.x
        return buf

    @functools.cached_property
    def padded(self) -> Tensor:
        """The zero-padded input ``(B, C, hp, wp)``."""
        if not any(self.pads):
            return self.x.contiguous()
        return self.flat[:, :, : self.hp * self.wp].view(self.batch, self.channels, self.hp, self.wp)

    def framework_input(self) -> tuple[Tensor, tuple[int, int]]:
        """Input and padding for the framework's own convolution kernels (which pad symmetric padding)."""
        top, bottom, left, right = self.pads
        if top == bottom and left == right:
            return self.x, (top, left)
        return self.padded, (0, 0)

    def offsets(self) -> list[int]:
        """Flat offset of each kernel tap ``(i, j)`` in the padded input (row-major taps)."""
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return [i * dh * self.wp + j * dw for i, j in itertools.product(range(kh), range(kw))]

    def columns(self) -> Tensor:
        """The unfolded input ``(B, G, T, C_g * kh * kw)``: a view for unit-stride unpadded 1x1 kernels, else one copy
        of an overlapping view of the padded input (im2col; on a CPU 2-10x faster than ``F.unfold``)."""
        b, groups = self.batch, self.groups
        if self.kernel == (1, 1) and self.stride == (1, 1) and not any(self.pads):
            return positions(self.x, groups)
        x = self.padded if any(self.pads) else self.x  # any layout: the copy below reads it in place
        sb, sc, sh, sw = x.stride()
        (kh, kw), (dh, dw), (th, tw) = self.kernel, self.dilation, self.stride
        taps = x.as_strided((b, self.channels, kh, kw, self.out_h, self.out_w),
                            (sb, sc, dh * sh, dw * sw, th * sh, tw * sw))
        return taps.reshape(b, groups, -1, self.positions).transpose(-1, -2)

    def output_positions(self, d: Tensor) -> Tensor:
        """The output gradient as ``(B, G, T, C_out / G)``."""
        return positions(d.reshape(self.batch, self.out_channels, self.out_h, self.out_w), self.groups)

    def output_grid(self, d: Tensor) -> Tensor:
        """The output gradient on the padded width, ``(B * G, C_out / G, out_h * wp)``, zero past ``out_w``."""
        grid = d.new_zeros(self.batch, self.out_channels, self.out_h, self.wp)
        grid[..., : self.out_w] = d.reshape(self.batch, self.out_channels, self.out_h, self.out_w)
        return grid.reshape(self.batch * self.groups, -1, self.grid)

    def weight(self, w: Tensor) -> Tensor:
        """A weight-shaped tensor as ``(C_out, C_g, kh, kw)``."""
        return w.reshape(self.out_channels, -1, *self.kernel)

    def live(self) -> tuple[ConvGeometry, tuple[slice, slice]] | None:
        """The same convolution without the kernel taps that read only zero padding, and the taps kept.

        On small feature maps (a 3x3 kernel on 1x1 or a 7x7 depthwise kernel on 2x2 inputs, as deep stages of
        ImageNet networks on 32-pixel images have) some taps meet padding at every output position: their
        per-sample gradient is exactly zero, so the statistics of the cropped convolution are the layer's. ``None``
        when every tap is live (or the live taps do not form a box that a padded convolution can express).
        """
        top, bottom, left, right = self.pads
        rows = _live_taps(self.x.shape[2], top, self.kernel[0], self.stride[0], self.dilation[0], self.out_h)
        cols = _live_taps(self.x.shape[3], left, self.kernel[1], self.stride[1], self.dilation[1], self.out_w)
        if rows is None or cols is None or (rows[1] - rows[0], cols[1] - cols[0]) == self.kernel:
            return None
        (r0, r1), (c0, c1) = rows, cols
        (sh, sw), (dh, dw) = self.stride, self.dilation
        new_top, new_left = top - r0 * dh, left - c0 * dw
        new_bottom = (self.out_h - 1) * sh + dh * (r1 - r0 - 1) + 1 - self.x.shape[2] - new_top
        new_right = (self.out_w - 1) * sw + dw * (c1 - c0 - 1) + 1 - self.x.shape[3] - new_left
        if min(new_top, new_left, new_bottom, new_right) < 0:
            return None
        crop = copy.copy(self)
        for cached in ("flat", "padded"):  # padded with the old pads
            crop.__dict__.pop(cached, None)
        crop.kernel, crop.pads = (r1 - r0, c1 - c0), (new_top, new_bottom, new_left, new_right)
        return crop, (slice(r0, r1), slice(c0, c1))


def positions(t: Tensor, groups: int) -> Tensor:
    """``(B, C, H, W)`` as ``(B, G, H * W, C / G)``: a view when ``t`` is NCHW- or channels-last-contiguous."""
    b, c = t.shape[:2]
    if channels_last(t):
        return t.permute(0, 2, 3, 1).reshape(b, -1, groups, c // groups).transpose(1, 2)
    return t.reshape(b, groups, c // groups, -1).transpose(-1, -2)


@functools.lru_cache(maxsize=1024)
def _live_taps(size: int, pad: int, kernel: int, stride: int, dilation: int, out: int) -> tuple[int, int] | None:
    """``[first, end)`` of the taps along one dimension that read an input position (not padding) at some
    output position; ``None`` when they are not one contiguous range."""
    live = [j for j in range(kernel)
            if any(0 <= t * stride + j * dilation - pad < size for t in range(out))]
    if not live or live != list(range(live[0], live[-1] + 1)):
        return None
    return live[0], live[-1] + 1


def _padding(module: Any, one_d: bool) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` zero padding, resolving ``"valid"`` and ``"same"`` as PyTorch does."""
    kernel = module.kernel_size
    if isinstance(module.padding, str):
        if module.padding == "valid":
            pads = [(0, 0)] * len(kernel)
        else:
            totals = [dil * (k - 1) for dil, k in zip(module.dilation, kernel)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in module.padding]
    if one_d:
        pads = [(0, 0), *pads]
    (top, bottom), (left, right) = pads
    return top, bottom, left, right


def forward_dots(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """``g_i . W_k = sum_t d_t . (W_k * a)_t``: the layer's forward with the directions' weights."""
    b, groups, k = geo.batch, geo.groups, len(weights)
    if not k:
        return d.new_zeros(b, 0)
    x, padding = geo.framework_input()
    if k == 1:  # the usual case (G_S alone): its weights as they are, one dot product per sample
        out = F.conv2d(x, geo.weight(weights[0]), None, geo.stride, padding, geo.dilation, groups)
        return row_dots(out, d.reshape(out.shape)).unsqueeze(1)
    w = torch.stack([geo.weight(v).reshape(groups, -1, *geo.weight(v).shape[1:]) for v in weights], 1)
    out = F.conv2d(x, w.flatten(0, 2), None, geo.stride, padding, geo.dilation, groups)
    return torch.einsum("bgkpt,bgpt->bk", out.reshape(b, groups, k, -1, geo.positions),
                        d.reshape(b, groups, -1, geo.positions))


def direct_shifted(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Unit stride: ``g_i`` tap by tap, one matmul with a shifted view of the padded input per tap."""
    b, groups, length = geo.batch, geo.groups, geo.grid
    cg = geo.channels // groups
    flat = geo.flat.reshape(b * groups, cg, -1)
    grid = geo.output_grid(d)
    offsets = geo.offsets()
    g = flat.new_empty(len(offsets), b * groups, grid.shape[1], cg)
    for o, off in enumerate(offsets):
        torch.bmm(grid, flat[:, :, off: off + length].transpose(1, 2), out=g[o])
    g = g.reshape(len(offsets), b, -1)
    sq = torch.linalg.vector_norm(g, dim=(0, 2)).square()
    if not weights:
        return sq, sq.new_zeros(b, 0)
    w = torch.stack([geo.weight(v).reshape(groups, -1, cg, len(offsets)).permute(3, 0, 1, 2)
                     .reshape(len(offsets), -1) for v in weights], -1)
    return sq, torch.bmm(g, w).sum(0)


def ghost_shifted(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Unit stride: ghost norm with the column Gram matrix taken from shifted blocks of ``X^T X``.

    ``X^T X`` is formed over the input's pixels and placed in the padded input's layout (padding pixels meet only
    zeros), the column Gram matrix summed from its shifted blocks on the padded width, and its rows and columns
    past the output width dropped before the product with the output gradient's Gram matrix."""
    b, groups, length = geo.batch, geo.groups, geo.grid
    (h, w), (top, _, left, _) = geo.x.shape[2:], geo.pads
    n, side = b * groups, geo.hp * geo.wp + (geo.kernel[1] - 1) * geo.dilation[1]
    x = positions(geo.x, groups).flatten(0, 1)
    pixels = x.new_zeros(n, side, side)
    inner = pixels[:, : geo.hp * geo.wp, : geo.hp * geo.wp].view(n, geo.hp, geo.wp, geo.hp, geo.wp)
    inner[:, top: top + h, left: left + w, top: top + h, left: left + w] = (x @ x.transpose(1, 2)).view(n, h, w, h, w)
    first, *rest = geo.offsets()
    gram_a = pixels[:, first: first + length, first: first + length].clone()
    for off in rest:
        gram_a += pixels[:, off: off + length, off: off + length]
    oh, ow = geo.out_h, geo.out_w
    gram_a = gram_a.view(n, oh, geo.wp, oh, geo.wp)[:, :, :ow, :, :ow]
    dpos = geo.output_positions(d).flatten(0, 1)
    gram_d = dpos @ dpos.transpose(1, 2)
    sq = row_dots(gram_a.reshape(b, -1), gram_d.reshape(b, -1))
    return sq, forward_dots(geo, d, weights)


def direct_columns(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Unfold, then form ``g_i`` with one matmul per sample and group."""
    cols = geo.columns()
    ws = grouped_weights(weights, geo.groups, cols.shape[-1])
    return direct_statistics(cols, geo.output_positions(d), ws)


def ghost_columns(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Unfold, then the ghost norm; dot products through the layer's forward, which for one output position is a
    matmul of the columns (on a CPU 1.4-1.8x faster than the framework's convolution for 3x3 layers of a ResNet's
    last stage on 2x2 and 1x1 maps)."""
    cols = geo.columns()
    if geo.positions == 1:
        return ghost_statistics(cols, geo.output_positions(d), grouped_weights(weights, geo.groups, cols.shape[-1]))
    return ghost_norm(cols, geo.output_positions(d)), forward_dots(geo, d, weights)


#: Elements of per-sample gradients above which :func:`direct_grouped` runs :data:`GROUPED_CHUNK` samples at a time
#: (the framework's grouped weight-gradient kernel slows down with many large groups; measured 2-4x on a CPU).
GROUPED_LIMIT = 2**20
GROUPED_CHUNK = 4


def direct_grouped(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The framework's weight-gradient kernel with the batch folded into the groups gives every ``g_i``."""
    b, cg = geo.batch, geo.channels // geo.groups
    x, padding = geo.framework_input()
    per = geo.out_channels * cg * geo.kernel[0] * geo.kernel[1]
    step = GROUPED_CHUNK if b * per > GROUPED_LIMIT else b
    sq, dots = [], []
    for i in range(0, b, step):
        n = min(step, b - i)
        xs = x[i: i + n].reshape(1, n * geo.channels, *x.shape[2:])
        grad = d[i: i + n].reshape(1, n * geo.out_channels, geo.out_h, geo.out_w)
        size = (n * geo.out_channels, cg, *geo.kernel)
        g = torch.nn.grad.conv2d_weight(xs, size, grad, geo.stride, padding, geo.dilation, n * geo.groups)
        g = g.reshape(n, -1)
        sq.append(sqnorm(g))
        dots.append(matvecs(g, weights))
    return torch.cat(sq), torch.cat(dots)


def direct_forward(geo: ConvGeometry, d: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``g_i`` as the framework's forward convolution of the input with the output gradient as its kernel (stride and
    dilation swapped): each sample's and group's input channels are the batch of one group (a view for depthwise
    layers), its output channels' gradients that group's kernels."""
    b, groups, cg = geo.batch, geo.groups, geo.channels // geo.groups
    x, padding = geo.framework_input()
    x = x.reshape(b * groups, cg, *x.shape[2:]).transpose(0, 1)
    kernel = d.reshape(b * geo.out_channels, 1, geo.out_h, geo.out_w)
    g = F.conv2d(x, kernel, None, geo.dilation, padding, geo.stride, b * groups)
    g = g[..., : geo.kernel[0], : geo.kernel[1]].transpose(0, 1).reshape(b, -1)
    return sqnorm(g), matvecs(g, weights)


Algorithm = Callable[[ConvGeometry, Tensor, Sequence[Tensor]], tuple[Tensor, Tensor]]

ALGORITHMS: dict[str, Algorithm] = {
    "direct_shifted": direct_shifted,
    "ghost_shifted": ghost_shifted,
    "direct_columns": direct_columns,
    "ghost_columns": ghost_columns,
    "direct_grouped": direct_grouped,
    "direct_forward": direct_forward,
}


#: Input channels per group below which the forms of ``g_i`` by matmul run proportionally below peak (on a CPU the
#: grouped weight-gradient kernel's time hardly changed from 3 to 16 input channels).
EFFICIENT_CHANNELS = 16
#: Slowdown of :func:`direct_forward` where groups have several input channels (a convolution with one input channel
#: per group and a large kernel), for kernels of at least :data:`EFFICIENT_TAPS` taps, proportionally more below
#: (measured on a CPU: about 4x for 3x3, 2x for 4x4 and 7x7 kernels; it wins for 3-channel image stems).
FORWARD_SLOWDOWN = 2.0
EFFICIENT_TAPS = 16
#: Output width below which copying the columns slows down proportionally.
EFFICIENT_WIDTH = 16
#: Slowdown of :func:`direct_columns` below :data:`EFFICIENT_CHANNELS` input channels, ungrouped: one copy of the
#: columns, then per-sample matmuls at about 1/2.5 of the weight-gradient kernel's rate (measured on a CPU for
#: 3-channel 3x3 and 7x7 stems, where it beat the grouped kernel 2x and, on 3x3 kernels, the forward 1.1-1.6x).
FEW_CHANNELS_COLUMNS = 2.5


def estimates(geo: ConvGeometry, directions: int) -> dict[str, float]:
    """Rough per-sample cost (multiply-adds plus weighted memory traffic) of each applicable algorithm."""
    groups, taps = geo.groups, geo.kernel[0] * geo.kernel[1]
    cg, p = geo.channels // groups, geo.out_channels // groups
    fan_in, t, grid, pixels = cg * taps, geo.positions, geo.grid, geo.hp * geo.wp
    weight = groups * fan_in * p
    passes = MEMORY_COST * (2 + directions) * weight  # write g_i, read it for the norm and each direction
    forward = directions * t * weight
    one_by_one = geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads)
    # A 1x1 layer's columns are a view; other columns are copied in runs of the output width (on a CPU the copy
    # ran at 11, 1.9 and 0.3 G elements/s for widths 32, 8 and 2).
    unfold = 0.0 if one_by_one else MEMORY_COST * groups * t * fan_in * max(1.0, EFFICIENT_WIDTH / geo.out_w)

    def direct(inner: int, outputs: int) -> float:  # matmuls forming g_i from few input channels run slowly too
        return inner * weight * max(slowdown(inner, outputs), EFFICIENT_CHANNELS / cg) + passes

    costs = {
        "direct_columns": unfold + (direct(t, p * fan_in) if cg >= EFFICIENT_CHANNELS or groups > 1
                                    else t * weight * FEW_CHANNELS_COLUMNS + passes),
        "ghost_columns": unfold + groups * t * t * (fan_in + p + 2 * MEMORY_COST) + forward,
        "direct_grouped": direct(t, p * fan_in),
    }
    if t > 1:
        depthwise = cg == 1 and groups > 1
        forward_slowdown = 1.0 if depthwise else FORWARD_SLOWDOWN * max(1.0, EFFICIENT_TAPS / taps)
        costs["direct_forward"] = t * weight * forward_slowdown + passes
        if depthwise:  # the forward kernel computes what direct_grouped does, several times faster
            del costs["direct_grouped"]
    if geo.shiftable:
        layout = MEMORY_COST * (geo.channels * pixels + geo.out_channels * grid)
        costs["direct_shifted"] = layout + direct(grid, p * cg)
        inputs = geo.x.shape[2] * geo.x.shape[3]
        costs["ghost_shifted"] = (groups * (inputs**2 * cg + MEMORY_COST * pixels**2 + grid**2 * (taps + MEMORY_COST)
                                            + t * t * p) + forward)
    return costs


class ConvRule(LayerRule):
    """Zero-padded ``nn.Conv1d`` / ``nn.Conv2d``.

    Args:
        algorithm: force one of :data:`ALGORITHMS` (for tests and benchmarks); ``None`` takes the one with
            the lowest cost estimate.
    """

    def __init__(self, algorithm: str | None = None) -> None:
        if algorithm is not None and algorithm not in ALGORITHMS:
            raise ValueError(f"Unknown convolution algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
        self.algorithm = algorithm

    def supports(self, module: Any) -> bool:
        return module.padding_mode == "zeros"

    def as_convolution(self, module: Any, a: Tensor, d: Tensor) -> tuple[Any, Tensor, Tensor]:
        """``(convolution, its input, its output gradient)`` whose weight gradient is this layer's: the layer
        itself here."""
        return module, a, d

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        out = {}
        if "weight" in wanted:
            conv, x, g = self.as_convolution(module, a, d)
            geo = ConvGeometry(conv, x)
            cols, dpos = geo.columns(), geo.output_positions(g)
            out["weight"] = (dpos.transpose(-1, -2) @ cols).reshape(a.shape[0], *conv.weight.shape)
        if "bias" in wanted:
            out["bias"] = d.reshape(a.shape[0], module.out_channels, -1).sum(2)
        return out

    def statistics(self, module: Any, a: Tensor, d: Tensor, wanted: Collection[str],
                   directions: Directions) -> tuple[Tensor, Tensor]:
        parts = []
        if "weight" in wanted:
            conv, x, g = self.as_convolution(module, a, d)
            parts.append(self.weight_statistics(conv, x, g, [v["weight"] for v in directions]))
        if "bias" in wanted:
            parts.append(bias_statistics(d.reshape(a.shape[0], module.out_channels, -1).sum(2), directions))
        return add_statistics(parts)

    def weight_statistics(self, module: Any, a: Tensor, d: Tensor,
                          weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(||g_W||^2, g_W . W_k)`` by the forced or the cheapest estimated algorithm (deterministic)."""
        geo = ConvGeometry(module, a)
        live = geo.live()
        if live is not None:
            crop, (rows, cols) = live
            taps = (rows.start, rows.stop, cols.start, cols.stop)
            weights = [derived(("conv.live", taps), (v,), lambda w: geo.weight(w)[:, :, rows, cols].contiguous())
                       for v in weights]
            geo = crop
        costs = estimates(geo, len(weights))
        if self.algorithm is not None:
            name = self.algorithm if self.algorithm in costs else "direct_columns"
        else:
            name = min(costs, key=costs.__getitem__)
        return ALGORITHMS[name](geo, d, weights)


class ConvTransposeRule(ConvRule):
    """``nn.ConvTranspose1d`` / ``nn.ConvTranspose2d`` (any stride, padding, output padding, dilation, groups)
    through the convolution it is the adjoint of.

    ``y = conv_transpose(x, W)`` is the input gradient of ``z -> conv(z, W)`` with the same stride, padding,
    dilation and groups (``spec.adjoint``), so ``d . y = conv(d, W) . x`` for the output gradient ``d``: sample
    ``i``'s weight gradient is that convolution's on input ``d_i`` with output gradient ``x_i``, by
    :class:`ConvRule`'s algorithms. Where ``output_padding >= stride`` (allowed below the dilation), ``conv(d, W)``
    is longer than ``x``; its extra positions meet zeros (``x`` zero-padded at the end). The bias gradient is
    ``d_i`` summed over positions (``spec.out_channels``).
    """

    def as_convolution(self, module: Any, a: Tensor, d: Tensor) -> tuple[Any, Tensor, Tensor]:
        geo = ConvGeometry(module.adjoint, d)
        size = (geo.out_h, geo.out_w)[-(a.ndim - 2):]
        pads = [p for n, m in zip(reversed(size), reversed(a.shape[2:])) for p in (0, n - m)]
        return module.adjoint, d, F.pad(a, pads) if any(pads) else a
