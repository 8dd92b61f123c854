"""Visual fashion recommender: ResNet50 embeddings, an HNSW index with exact filters, attribute heads."""
from .errors import ArtifactsError, ImageError, UserError, WeightsError
from .recommender import Match, Recommender

__all__ = ["Recommender", "Match", "UserError", "ImageError", "ArtifactsError", "WeightsError"]
