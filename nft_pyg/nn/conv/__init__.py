"""Weight-space message-passing operators (one per file)."""
from .hnp_conv import HNPConv
from .nft_attention import NFTAttention
from .np_conv import NPConv
from .pointwise_conv import PointwiseConv

__all__ = ["NPConv", "HNPConv", "PointwiseConv", "NFTAttention"]
