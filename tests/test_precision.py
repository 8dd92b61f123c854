"""The model's paths: int8, PyTorch's and ONNX Runtime's (the fast paths on x86 CPUs, with or without bf16),
each against fp32 with the real weights, a whole build and search with each, and the refusals where an
index's descriptors and the query path's would differ."""

from __future__ import annotations

import gc
import shutil

import numpy as np
import pytest
import torch

from recommender import Recommender, ort_int8
from recommender.build import precompute
from recommender.catalog import CatalogSource
from recommender.embedder import Embedder
from recommender.errors import ArtifactsError, UserError
from recommender.images import load_image
from recommender.model_paths import choose_precision, int8_supported, ort_int8_supported
from tests.helpers import SAMPLE, make_catalog, sample_rows

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not int8_supported(CPU), reason="int8 needs x86 with AVX2")
# Both int8 paths are tested on every x86 machine, whichever `auto` picks there.
PATHS = [
    "int8",
    pytest.param("ort-int8", marks=pytest.mark.skipif(not ort_int8_supported(CPU), reason="needs onnxruntime")),
]


def pixels(embedder: Embedder, start: int, n: int) -> np.ndarray:
    rows = sample_rows(n, start)[1:]
    return np.stack([embedder.model_input(load_image(SAMPLE / "images" / f"{row[0]}.jpg")) for row in rows])


@pytest.mark.parametrize("path", PATHS)
def test_int8_descriptors_stay_close_to_fp32(real_weights, path):
    fp32, int8 = Embedder(real_weights, precision="fp32"), Embedder(real_weights, precision=path)
    int8.calibrate(pixels(int8, 0, 64))
    queries = pixels(fp32, 500, 32)
    reference, fast = fp32.forward(queries)[0], int8.forward(queries)[0]
    cosine = (reference[:, :2048] * fast[:, :2048]).sum(axis=1)  # the last stage's unit regional GeM
    # Measured on 200 fashion-dev photos: PyTorch's int8 mean 0.994, lowest 0.969; ONNX Runtime's
    # mean 0.997, lowest 0.991 (docs/benchmarks.md#cpu-paths, #real-avx2).
    assert cosine.mean() > 0.985 and cosine.min() > 0.94
    recorded = int8.describe()
    assert recorded["precision"] == path and "int8" not in fp32.describe() and "ort_int8" not in fp32.describe()
    if path == "int8":
        assert recorded["int8"]["qparams"] and "ort_int8" not in recorded
    else:
        assert recorded["ort_int8"]["sha256"] == ort_int8.sha256(int8.ort_graph) and "int8" not in recorded
        # Its session runs the normalising and pooling too (one graph): as torch runs them on its maps.
        with torch.inference_mode():
            features, logits = int8._head(*int8.feature_maps(queries))
        assert np.abs(fast - features.numpy()).max() < 1e-5
        assert np.abs(int8.forward(queries)[1] - logits.numpy()).max() < 1e-3


@pytest.fixture(scope="module", params=PATHS)
def int8_index(request, tmp_path_factory, real_weights, text_encoder):
    """An index built on each int8 path: the session's real index where the path is this CPU's default
    (it was built so), else a small one."""
    if request.param == choose_precision(CPU):
        return request.getfixturevalue("real_index")
    folder = make_catalog(tmp_path_factory.mktemp("int8-catalog"), sample_rows(60))
    out = tmp_path_factory.mktemp(request.param) / "index"
    embedder = Embedder(real_weights, precision=request.param)
    precompute(CatalogSource(str(folder)), out, embedder, text_encoder, progress=False)
    return out


@pytest.fixture(scope="module")
def fp32_index(tmp_path_factory, real_weights, text_encoder):
    folder = make_catalog(tmp_path_factory.mktemp("fp32-catalog"), sample_rows(40))
    out = tmp_path_factory.mktemp("fp32") / "index"
    precompute(CatalogSource(str(folder)), out, Embedder(real_weights, precision="fp32"), text_encoder, progress=False)
    return out


def test_a_whole_build_and_search_with_int8(int8_index, real_weights, text_encoder):
    rec = Recommender.load(int8_index, weights=real_weights, text_encoder=text_encoder)
    built = rec.manifest["model"]
    assert rec.embedder.precision == built["precision"] and built["precision"] in ("int8", "ort-int8")
    if built["precision"] == "int8":
        assert rec.embedder.int8_qparams == built["int8"]["qparams"]  # the build's calibration
    else:  # the build's graph, published with the index
        graph = (int8_index / built["ort_int8"]["file"]).read_bytes()
        assert rec.embedder.ort_graph == graph and ort_int8.sha256(graph) == built["ort_int8"]["sha256"]
    # Made at load: FX's conversion patches torch.nn.Module.__call__ process-wide while it traces, which
    # broke a concurrent query's resize under load.
    assert rec.embedder._backbone is not None
    item_id = int(rec.metadata.ids[7])
    first = rec.search(load_image(SAMPLE / "images" / f"{item_id}.jpg"), 3)[0]
    assert first.id == item_id and first.score > 0.95


def test_an_index_refuses_a_query_path_whose_descriptors_differ(int8_index, fp32_index, real_weights, text_encoder):
    built = Recommender.load(int8_index, weights=real_weights, text_encoder=text_encoder).manifest["model"]["precision"]
    other = "ort-int8" if built == "int8" else "int8"
    for path in ("fp32", other):
        with pytest.raises(ArtifactsError, match=f"built with {built} descriptors and {path} ones would differ"):
            Recommender.load(int8_index, weights=real_weights, text_encoder=text_encoder, precision=path)
    fp32 = fp32_index
    with pytest.raises(ArtifactsError, match=f"built with fp32 descriptors and {built} ones would differ"):
        Recommender.load(fp32, weights=real_weights, text_encoder=text_encoder, precision=built)
    # Left to choose, the query path follows the index: a float one where the index is float.
    assert Recommender.load(fp32, weights=real_weights, text_encoder=text_encoder).embedder.precision in (
        "fp32",
        "bf16",
    )


def test_int8_keeps_no_float_copy_of_the_model_and_a_float_path_gets_it_back(real_weights):
    def float_convolutions() -> set[int]:
        gc.collect()
        return {id(m) for m in gc.get_objects() if type(m) is torch.nn.Conv2d and not m.weight.is_meta}

    before = float_convolutions()
    embedder = Embedder(real_weights)
    embedder.calibrate(pixels(embedder, 0, 16))
    embedder.warm_up()
    # Only the classifier stays float: the trunk was released, and FX's conversion left no copy behind.
    assert next(embedder.model.layer1.parameters()).is_meta and not float_convolutions() - before
    queries = pixels(embedder, 500, 4)
    embedder.follow({"precision": "fp32"}, "a float index")
    reference = Embedder(real_weights, precision="fp32").forward(queries)[0]
    assert (embedder.forward(queries)[0][:, :2048] * reference[:, :2048]).sum(axis=1).min() > 0.999


@pytest.mark.skipif(not ort_int8_supported(CPU), reason="needs onnxruntime")
def test_an_ort_int8_index_whose_graph_is_missing_or_edited_is_one_sentence(
    int8_index, real_weights, text_encoder, tmp_path
):
    built = Recommender.load(int8_index, weights=real_weights, text_encoder=text_encoder).manifest["model"]
    if built["precision"] != "ort-int8":
        pytest.skip("the graph file is ONNX Runtime's int8's")
    copy = tmp_path / "index"
    shutil.copytree(int8_index, copy)
    graph = copy / ort_int8.GRAPH_FILE
    graph.write_bytes(graph.read_bytes()[:-100])
    with pytest.raises(ArtifactsError, match="int8 graph of the index .* does not match its checksum"):
        Recommender.load(copy, weights=real_weights, text_encoder=text_encoder)
    graph.unlink()
    with pytest.raises(ArtifactsError, match="backbone-int8.onnx is missing; rebuild the index"):
        Recommender.load(copy, weights=real_weights, text_encoder=text_encoder)


def test_auto_picks_pytorchs_int8_with_vnni_and_onnx_runtimes_without(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    assert choose_precision(CPU) == "int8"
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    assert choose_precision(CPU) == ("ort-int8" if ort_int8_supported(CPU) else "int8")
    monkeypatch.setattr(ort_int8, "available", lambda: False)
    assert choose_precision(CPU) == "int8"


def test_int8_where_the_cpu_cannot_run_it_is_one_sentence(random_weights, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert choose_precision(torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(UserError, match="int8 needs an x86 CPU with AVX2"):
        Embedder(random_weights, precision="int8")


def test_the_int8_backbone_is_traced_with_fx_conversions_outputs_bit_for_bit(real_weights):
    # Traced, a pass takes the GIL once instead of at each operation (a busy server's queries waited
    # seconds for FX's graph); indexes built before tracing stay valid only if the outputs are equal.
    embedder = Embedder(real_weights, precision="int8")
    embedder.calibrate(pixels(embedder, 0, 16))
    embedder.warm_up()
    assert isinstance(embedder._backbone, torch.jit.ScriptModule)
    batch = embedder.normalise(pixels(embedder, 500, 5))
    with torch.inference_mode():
        traced, converted = embedder._backbone(batch), embedder.path.converted(embedder, batch)(batch)
    assert all(torch.equal(a, b) for a, b in zip(traced, converted))


class _TwoMaps(torch.nn.Module):
    """A backbone's shape in miniature: x -> (last stage, the stage before it)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Conv2d(8, 16, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = torch.relu(self.first(x))
        return torch.relu(self.second(mid)), mid


@pytest.mark.skipif(not ort_int8_supported(CPU), reason="needs onnxruntime")
def test_ort_calibration_one_photo_at_a_time_gives_the_batched_graph_byte_for_byte(monkeypatch):
    # One photo per pass keeps a build's peak gigabytes lower; the ranges are a min / max over all the photos,
    # so the graph (and every index built with it) must not depend on how they were batched.
    torch.manual_seed(0)
    model = _TwoMaps().eval()
    calibration = np.random.default_rng(0).standard_normal((12, 3, 32, 24), dtype=np.float32)
    assert ort_int8.CALIBRATION_BATCH == 1
    one_at_a_time = ort_int8.quantize(model, calibration)
    monkeypatch.setattr(ort_int8, "CALIBRATION_BATCH", 4)
    assert ort_int8.quantize(model, calibration) == one_at_a_time
    assert ort_int8.quantize(model, calibration[:6]) != one_at_a_time  # other photos, other ranges
