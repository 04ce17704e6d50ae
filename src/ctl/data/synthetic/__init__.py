"""The built-in synthetic continual cross-domain world (see :class:`SyntheticWorld`)."""

from ctl.data.synthetic.spec import DomainSpec
from ctl.data.synthetic.world import SyntheticWorld, default_domains

__all__ = ["DomainSpec", "SyntheticWorld", "default_domains"]
