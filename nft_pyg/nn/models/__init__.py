"""Weight-space models: the Neural Functional Transformer and Inr2Array."""
from .inr2array import (Inr2Array, LatentClassifier, SirenHypernetwork, SpatialSirenHypernetwork,
                        load_latents, save_latents)
from .nft import NFT, NFTEncoder

__all__ = ["NFT", "NFTEncoder", "Inr2Array", "SirenHypernetwork", "SpatialSirenHypernetwork",
           "LatentClassifier", "save_latents", "load_latents"]
