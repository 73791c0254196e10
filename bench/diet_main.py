# fs/main.py of bench/diet_bench.py's devices: the driver is frozen into the bench's image (as the
# agent is into ours), so its bytecode stays in flash and its compile leaves no holes in the heap
# that the update's baseline would count (docs/MEMORY.md).
import diet_driver  # noqa: F401  (runs its jobs on import)
