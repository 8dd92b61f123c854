"""Regional GeM: the pooling behind the CNN part of every descriptor."""

from __future__ import annotations

import torch

from recommender.pooling import gem_pool, grid_cells, grid_gem, regional_gem, regions


def test_regions_start_with_the_whole_map_stay_inside_it_and_cover_every_cell():
    for height, width in ((7, 6), (7, 7), (5, 4), (2, 9), (1, 1)):
        found = regions(height, width)
        assert found[0] == (0, height, 0, width)
        covered = torch.zeros(height, width)
        for top, bottom, left, right in found:
            assert 0 <= top < bottom <= height and 0 <= left < right <= width
            covered[top:bottom, left:right] = 1
        assert covered.all()
    assert len(regions(7, 6)) == 28  # the 224x168 input's maps; the pooling.py comment counts them


def test_regional_gem_is_unit_length_and_equals_gem_on_a_uniform_map():
    maps = torch.rand(3, 16, 7, 6)
    pooled = regional_gem(maps)
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(3))
    uniform = torch.rand(2, 16, 1, 1).expand(2, 16, 7, 6)  # every region pools to the same vector
    torch.testing.assert_close(regional_gem(uniform), torch.nn.functional.normalize(gem_pool(uniform), dim=1))


def test_regional_gem_is_the_sum_of_the_regions_unit_gem_vectors():
    maps = torch.rand(2, 8, 7, 6)
    expected = sum(torch.nn.functional.normalize(gem_pool(maps[:, :, t:b, x:r]), dim=1) for t, b, x, r in regions(7, 6))
    torch.testing.assert_close(regional_gem(maps), torch.nn.functional.normalize(expected, dim=1))


def test_grid_gem_is_each_cells_unit_gem_vector_cell_after_cell():
    maps = torch.rand(2, 8, 14, 11)  # the third stage's maps of a 224x168 input
    cells = grid_cells(14, 11)
    assert cells == ((0, 7, 0, 5), (0, 7, 5, 11), (7, 14, 0, 5), (7, 14, 5, 11))
    unit = torch.nn.functional.normalize
    expected = torch.cat([unit(gem_pool(maps[:, :, t:b, x:r]), dim=1) for t, b, x, r in cells], 1)
    torch.testing.assert_close(grid_gem(maps), expected)
