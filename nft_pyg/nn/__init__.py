"""Weight-space neural network modules: operators, pools, encodings, models."""
from .conv import HNPConv, NFTAttention, NPConv, PointwiseConv
from .encodings import GaussianFourierFeatures, IOPositionEncoding, LayerEncoding
from .kernel_projection import KernelProjection, KernelReadout
from .mixing import EndpointEdgeUpdate, NodeEdgeAdapter
from .nft_block import LatentCrossAttention, NFTBlock
from .norm import PoolNorm, WeightSpaceLayerNorm
from .pointwise import (
                        WeightSpaceActivation,
                        WeightSpaceDropout,
                        WeightSpaceLinear,
                        WeightSpaceSequential,
)
from .pool import HNPPool, NPPool, NPStatPool
from .structure import WeightGraphIndex

__all__ = ["NPConv", "HNPConv", "PointwiseConv", "NFTAttention", "NPPool", "NPStatPool",
           "HNPPool",
           "GaussianFourierFeatures", "LayerEncoding", "IOPositionEncoding",
           "KernelProjection", "KernelReadout", "WeightSpaceLayerNorm", "PoolNorm",
           "WeightSpaceActivation", "WeightSpaceDropout", "WeightSpaceLinear",
           "WeightSpaceSequential", "WeightGraphIndex", "NFTBlock",
           "LatentCrossAttention",
           "NodeEdgeAdapter", "EndpointEdgeUpdate"]
