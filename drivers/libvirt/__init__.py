"""The ``libvirt`` driver: a local zone whose hosts are libvirt hypervisors.

Registered as the ``libvirt`` entry point in the ``federator.drivers`` namespace; the
broker reaches it only through :mod:`federator.plugins`. Needs ``libvirt-python``
(the ``libvirt`` extra), which builds against the system's libvirt.
"""

from drivers.libvirt.driver import LibvirtDriver
from drivers.libvirt.options import LibvirtOptions

__all__ = ["LibvirtDriver", "LibvirtOptions"]
