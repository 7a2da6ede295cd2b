"""Money in and out, end to end: the stack's gateway, PSP simulator and executor (``tests/conftest.py``). Every
test starts with the simulator's faults off."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.payments.flows import FAULTS_OFF
from tests.psp_process import SimProcess


@pytest.fixture
async def sim(stack_sim: SimProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's own surface (/sim/...), with every fault off before and after the test."""
    async with httpx.AsyncClient(base_url=stack_sim.url, timeout=30) as http:
        assert (await http.put("/sim/faults", json=FAULTS_OFF)).status_code == 200
        yield http
        assert (await http.put("/sim/faults", json=FAULTS_OFF)).status_code == 200
