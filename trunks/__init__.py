"""SIP trunks: settings, OPTIONS probing, health and operator overrides.

Nothing here imports the application packages; the monitor receives its Redis
store, clocks and settings from the caller.
"""

from trunks.config import ProbeSettings, TrunkConfig
from trunks.errors import (
           ProbeError,
           ProbeRejected,
           ProbeTimeout,
           ProbeUnreachable,
           TrunkError,
           UnknownTrunk,
)
from trunks.health import HealthSnapshot, TrunkHealth, TrunkState
from trunks.monitor import TrunkMonitor, TrunkView
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

__all__ = ["HealthSnapshot", "Override", "OverrideAction", "ProbeError",
           "ProbeRejected", "ProbeSettings", "ProbeTimeout", "ProbeUnreachable", "TrunkConfig",
           "TrunkError", "TrunkHealth", "TrunkMonitor", "TrunkState", "TrunkStore",
           "TrunkView", "UnknownTrunk"]
