from .buffer import ReplayBuffer, herding_order

__all__ = ["ReplayBuffer", "herding_order"]
