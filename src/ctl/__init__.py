"""ctl: continual cross-domain CTR prediction (CTNet and the baselines of its paper)."""

__version__ = "0.1.0"
