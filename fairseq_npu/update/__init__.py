"""One update of the model, from the batch to the new weights, in one place (docs/update.md).

``mode`` picks who runs an update (``--update-mode``); ``device_update.DeviceUpdate`` is the update itself (autocast
from the precision policy, loss scaling and skip counters on the device in ``loss_scale``, unscale, clipping, the
fused AdamW step); ``graphs.GraphedUpdate`` captures it per batch shape (cuda: the whole update; npu: forward and
backward), and ``replay_timer`` measures the device time of each replay.
"""
