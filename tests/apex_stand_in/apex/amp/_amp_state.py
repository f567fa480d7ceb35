"""apex.amp._amp_state: the process-wide state apex keeps (here: the loss scalers)."""

import types

_amp_state = types.SimpleNamespace(loss_scalers=[])
