"""The built-in synthetic continual cross-domain world (see :class:`SyntheticWorld`)."""

from ctl.data.synthetic.parameters import default_domains
from ctl.data.synthetic.spec import DomainSpec
from ctl.data.synthetic.world import SyntheticWorld

__all__ = ["DomainSpec", "SyntheticWorld", "default_domains"]
