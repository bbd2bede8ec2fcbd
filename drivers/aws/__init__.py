"""The ``aws`` driver: an AWS region, or an EC2-compatible cloud, as a virtual zone.

Registered as the ``aws`` entry point in the ``federator.drivers`` namespace; the
broker reaches it only through :mod:`federator.plugins`.
"""

from drivers.aws.driver import AwsDriver
from drivers.aws.options import AwsOptions

__all__ = ["AwsDriver", "AwsOptions"]
