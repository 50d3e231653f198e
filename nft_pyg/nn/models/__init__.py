"""Weight-space models: NFN, NFT, Inr2Array and the baselines they are compared with."""
from .baselines import FlatMLP, GNNBaseline, StatNN
from .inr2array import (
                        Inr2Array,
                        LatentClassifier,
                        SirenHypernetwork,
                        SpatialSirenHypernetwork,
                        load_latents,
                        save_latents,
)
from .nfn import NFN, NFNEditor
from .nft import NFT, NFTEncoder
from .ticket_vae import TicketVAE

__all__ = ["NFN", "NFNEditor", "NFT", "NFTEncoder", "Inr2Array", "SirenHypernetwork",
           "SpatialSirenHypernetwork", "LatentClassifier", "save_latents", "load_latents",
           "FlatMLP", "StatNN", "GNNBaseline", "TicketVAE"]
