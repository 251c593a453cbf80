"""mortal: learning in place on sealed analog devices, and the lab around it.

Modules: ``ff`` (Forward-Forward learning in place), ``data`` (datasets), ``config`` (TOML run
configuration), ``runs`` (reading run files), ``runlog`` (writing them), ``plots``, ``export``,
``cli`` (the ``mortal`` command; ``mortal demo`` is the main job), ``xla_cpu`` (vector width of
XLA's CPU code).
"""

__version__ = "0.1.0"
