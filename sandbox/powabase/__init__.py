"""Local stand-in of the Powabase API (orchestration runs over SSE, history, provisioning).

async with PowabaseStandin() as pb:
    orch_id = pb.seed_from(Path("seed-content"))
    ...  # point POWABASE_URL at pb.url, key pb.api_key
"""

from sandbox.powabase.server import PowabaseStandin
from sandbox.powabase.state import RunRecord

__all__ = ["PowabaseStandin", "RunRecord"]
