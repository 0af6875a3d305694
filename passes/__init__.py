"""Graph passes, independent of LEAP: trace -> families (Plan) -> strip -> export."""
from passes.plan import AttentionFamily, FeedForwardFamily, Plan, Slice

__all__ = ["AttentionFamily", "FeedForwardFamily", "Plan", "Slice"]
