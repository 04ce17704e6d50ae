"""The version of the synthetic world generator.

Raise :data:`GENERATOR_VERSION` with every change that makes a generator config draw another world
(another simulation, another order of random draws): cached worlds are keyed by it with their
config (:func:`ctl.data.registry.dataset_dir`), so a changed generator makes its worlds anew
instead of reusing worlds the earlier code drew.
"""

#: 2: lifelong behaviour logs (pre-history, behaviour events) and dormant interests
GENERATOR_VERSION = 2
