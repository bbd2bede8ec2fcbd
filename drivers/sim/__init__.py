"""The built-in ``sim`` driver: a simulated pool of hypervisor hosts.

Registered as the ``sim`` entry point in the ``federator.drivers`` namespace; the
broker reaches it only through :mod:`federator.plugins`.
"""

from drivers.sim.driver import SimDriver
from drivers.sim.options import SimOptions

__all__ = ["SimDriver", "SimOptions"]
