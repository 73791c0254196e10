# Runs at every boot, before main.py. Kept tiny on purpose: anything that can fail here makes a
# device that cannot be reached. The OTA health gate and the agent start from main.py.
import gc

gc.collect()
