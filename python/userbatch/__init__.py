"""userbatch: the Rubin Observatory User Batch facility.

Catalog work runs as Spark applications over HEALPix-partitioned Delta tables; see ARCHITECTURE.md for the layers
(sky -> tables -> ops -> facility -> images/ml).
"""

__version__ = "0.1.0"

from .errors import UserbatchError  # noqa: E402
from .spark import session  # noqa: E402

__all__ = ["UserbatchError", "__version__", "session"]
