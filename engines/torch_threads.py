"""Intra-op threads per engine worker thread for the torch engines (SpeechT5, XTTS)."""

from __future__ import annotations

import threading

_thread_pin_lock = threading.Lock()


def pin_torch_threads(count: int) -> None:
    """Executor initializer: torch operators run on this thread use ``count`` intra-op threads.

    Under the OpenMP backend the count is kept per OS thread; the process-wide default that
    ``torch.set_num_threads`` also changes is put back from a short-lived helper thread, so
    threads of other torch engines that start later keep the default. With another backend
    the setting is process-wide and is simply applied.
    """
    import torch

    with _thread_pin_lock:
        if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
            torch.set_num_threads(count)
            return
        process_default = torch.get_num_threads()  # a fresh thread reports the default
        torch.set_num_threads(count)
        if process_default != count:
            restore = threading.Thread(target=torch.set_num_threads, args=(process_default,))
            restore.start()
            restore.join()
