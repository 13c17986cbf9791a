"""The top of corelane: the command line (``cli/``) and the composition root
(``runtime.py``: what ``corelane up`` starts and stops, in order). Nothing below imports
from here."""
