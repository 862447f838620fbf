"""``dpt train --config configs/X.yaml [key.sub=value ...]``: train DPT with Ray Train (see training.train)."""

from training.train import add_arguments, run

__all__ = ["add_arguments", "run"]
