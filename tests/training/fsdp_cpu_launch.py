"""`kolors …` under accelerate's FSDP in CPU processes, for tests: ``accelerate launch --config_file fsdp.yaml THIS``.

accelerate 1.15 switches to FSDP only in GPU-type setups; CPU processes (gloo) stay plain data-parallel. Marking
the already-initialised CPU state as multi-device before the Accelerator is made lets accelerate apply its FSDP2
plugin (torch's ``fully_shard`` works on CPU), so the FSDP code paths run on a machine without GPUs.
"""

import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType

state = PartialState(cpu=True)
if state.distributed_type != DistributedType.MULTI_CPU:
    sys.exit(f"expected a multi-process CPU launch, got {state.distributed_type}")
PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU

from kolors.cli.main import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
