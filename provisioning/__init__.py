"""Provision Powabase for powabot: KBs, sources, agents and the support orchestration, from a spec.

In-process use (e.g. ``powabot demo``)::

    result = await provision(client, load_spec())
    result.orchestration_id
"""

from provisioning.apply import provision
from provisioning.result import FailedSource, ProvisionResult
from provisioning.spec import Spec, load_spec

__all__ = ["FailedSource", "ProvisionResult", "Spec", "load_spec", "provision"]
