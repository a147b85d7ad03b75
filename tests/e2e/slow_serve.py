"""`python -m tests.e2e.slow_serve [zesty serve args]`: zesty with a test-only slow model.

Every forward pass of the torch runner first sleeps `ZESTY_TEST_FORWARD_S` seconds (a stand-in
for a big model on a small machine), and fails when its batch contains the token id
`ZESTY_TEST_POISON` (a poisoned input). Nothing else changes: the server, batcher, admission
and routes are the real ones.
"""

from __future__ import annotations

import os
import sys
import time


def install() -> None:
    from zesty.runtime import torch_runner

    real = torch_runner.TorchRunner.forward
    delay = float(os.environ.get("ZESTY_TEST_FORWARD_S", "0"))
    poison = os.environ.get("ZESTY_TEST_POISON")

    def forward(self, inputs, narrow=False):
        if delay:
            time.sleep(delay)
        if poison is not None and (inputs["input_ids"] == int(poison)).any():
            raise RuntimeError("poisoned input")
        return real(self, inputs)

    torch_runner.TorchRunner.forward = forward


if __name__ == "__main__":
    install()
    from zesty.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
