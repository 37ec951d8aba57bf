"""gru.py against torch.nn.GRU: the recurrent suite (recurrent_suite.py) run on gru.py,
and the budget that keeps `diff rnn.py gru.py` about the cell."""
import pytest
import torch.nn as nn

import gru
from recurrent_suite import *  # noqa: F401,F403 - the shared tests, collected here
from recurrent_suite import Script, changed_lines


@pytest.fixture
def script():
    return Script(gru, gru.GRU, nn.GRU)


def test_diff_against_rnn_stays_within_budget():
    assert changed_lines("rnn.py", "gru.py") <= 40
