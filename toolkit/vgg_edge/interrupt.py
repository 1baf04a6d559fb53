"""Ctrl-C that stops training even where a library swallows it.

Python raises KeyboardInterrupt wherever the main thread is when Ctrl-C arrives. If that is inside
library code that catches every exception (TensorFlow builds and traces a dataset each epoch), the
interrupt is lost and training goes on: seen once in CI, a run that trained on for 60 s after Ctrl-C.
`install` keeps Python's behaviour and also remembers the press; `StopOnCtrlC` raises it again at
the end of the epoch if it went missing. The CLI installs it; the Python API leaves signals alone.
"""

from __future__ import annotations

import signal

_pressed = False


def install() -> None:
    """Python's Ctrl-C, remembered. Only where Ctrl-C is Python's default: ignored (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum, frame) -> None:
    global _pressed
    _pressed = True
    raise KeyboardInterrupt


def stop_on_ctrl_c():
    """A Keras callback that raises KeyboardInterrupt at the end of an epoch after Ctrl-C was pressed."""
    import keras

    class StopOnCtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if _pressed:
                raise KeyboardInterrupt

    return StopOnCtrlC()
