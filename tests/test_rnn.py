"""rnn.py against torch.nn.RNN: the recurrent suite (recurrent_suite.py), run on rnn.py."""
import pytest
import torch.nn as nn

import rnn
from recurrent_suite import *  # noqa: F401,F403 - the shared tests, collected here
from recurrent_suite import Script


@pytest.fixture
def script():
    return Script(rnn, rnn.RNN, nn.RNN)
