"""mortal: learning in place on sealed analog devices, and the lab around it.

This release provides the command line (``mortal devices``) and plots of device physics; the
Forward-Forward learner, data, run files and the demo arrive with their issues.
"""

__version__ = "0.1.0"
