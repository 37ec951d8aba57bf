"""lstm.py against torch.nn.LSTM: the recurrent suite (recurrent_suite.py) run on lstm.py,
and the budget that keeps `diff rnn.py lstm.py` about the cell."""
import pytest
import torch.nn as nn

import lstm
from recurrent_suite import *  # noqa: F401,F403 - the shared tests, collected here
from recurrent_suite import Script, changed_lines


@pytest.fixture
def script():
    return Script(lstm, lstm.LSTM, nn.LSTM)


def test_diff_against_rnn_stays_within_budget():
    assert changed_lines("rnn.py", "lstm.py") <= 40
