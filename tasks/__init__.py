"""The work of every stage (DESIGN: typed functions, keyword arguments in, paths and counters out)."""

import logging

# torchao (the int8 export of distill) is imported by transformers whenever it is installed. On a CPU build it logs
# that its CUDA kernels do not load, and torch logs two deprecation notices about its enums: four lines of noise in
# every process that loads a model. Neither is actionable here; errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
