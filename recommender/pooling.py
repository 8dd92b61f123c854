"""Feature maps -> one vector. Regional GeM: the same product re-photographed (cropped, rotated, on a
margin) keeps most of its regions, so pooling regions separately and summing them matches it far better
than one global pool, at the same length (2048): docs/experiments.md#embedding, reproduced by
scripts/ablate.py."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

GEM_P = 3.0  # the GeM exponent: 3 beats the average (p = 1) for re-photographed products
# Region scales as in R-MAC (Tolias et al., ICLR 2016): at level l, squares of side 2*min(h, w)/(l+1),
# evenly spread with overlap; plus the whole map. The 7x6 maps of a 224x168 input have 28 regions.
LEVELS = 3
# The mid stage pooled on a GRID x GRID grid, for the heads only: where a part sits (a heel, a collar, a
# strap) separates types that one pool of the whole map mixes up (docs/experiments.md#heads-grid).
GRID = 2


def gem_pool(maps: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) feature maps -> (n, c) generalised-mean pooled features (p = GEM_P)."""
    return maps.clamp(min=1e-6).pow(GEM_P).mean((2, 3)).pow(1.0 / GEM_P)


@lru_cache(maxsize=8)
def regions(height: int, width: int, levels: int = LEVELS) -> tuple[tuple[int, int, int, int], ...]:
    """(top, bottom, left, right) of every region of a height x width map: the whole map, then the
    R-MAC squares of each level."""
    out = [(0, height, 0, width)]
    for level in range(1, levels + 1):
        side = max(1, int(2 * min(height, width) / (level + 1)))
        ys = np.unique(np.round(np.linspace(0, height - side, level + (height > side))).astype(int))
        xs = np.unique(np.round(np.linspace(0, width - side, level + (width > side))).astype(int))
        out += [(int(y), int(y) + side, int(x), int(x) + side) for y in ys for x in xs]
    return tuple(out)


@lru_cache(maxsize=8)
def grid_cells(height: int, width: int, cells: int = GRID) -> tuple[tuple[int, int, int, int], ...]:
    """(top, bottom, left, right) of the cells of a `cells` x `cells` grid over a height x width map,
    row by row."""
    rows = [(i * height // cells, (i + 1) * height // cells) for i in range(cells)]
    columns = [(j * width // cells, (j + 1) * width // cells) for j in range(cells)]
    return tuple((top, bottom, left, right) for top, bottom in rows for left, right in columns)


@lru_cache(maxsize=16)
def _averaging(found: tuple[tuple[int, int, int, int], ...], height: int, width: int) -> torch.Tensor:
    """(height * width, regions): column j averages the cells of region j of `found`."""
    weights = torch.zeros(height, width, len(found))
    for j, (top, bottom, left, right) in enumerate(found):
        weights[top:bottom, left:right, j] = 1.0 / ((bottom - top) * (right - left))
    return weights.reshape(height * width, len(found))


def _region_gem(maps: torch.Tensor, found: tuple[tuple[int, int, int, int], ...]) -> torch.Tensor:
    """(n, c, h, w) -> (n, c, regions): the unit GeM vector of each region, all in one matrix product (4x
    faster than slicing region by region)."""
    height, width = int(maps.shape[2]), int(maps.shape[3])
    averaging = _averaging(found, height, width).to(maps.device, maps.dtype)  # maps may be on a GPU
    means = maps.clamp(min=1e-6).pow(GEM_P).flatten(2) @ averaging
    return torch.nn.functional.normalize(means.pow(1.0 / GEM_P), dim=1)


def regional_gem(maps: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, c) unit vectors: the sum of the unit GeM vectors of every region."""
    # int(): a graph export traces the map's sides as tensors; they are fixed by the input size.
    per_region = _region_gem(maps, regions(int(maps.shape[2]), int(maps.shape[3])))
    return torch.nn.functional.normalize(per_region.sum(2), dim=1)


def grid_gem(maps: torch.Tensor, cells: int = GRID) -> torch.Tensor:
    """(n, c, h, w) -> (n, cells * cells * c): the unit GeM vector of each grid cell, cell after cell."""
    per_cell = _region_gem(maps, grid_cells(int(maps.shape[2]), int(maps.shape[3]), cells))
    return per_cell.transpose(1, 2).flatten(1)
