"""One way to wait for a condition on the CLI side: tenacity, polling at a fixed short
period until a deadline. (Where the kernel can tell us, a pidfd or a pipe is waited on
instead; the lean programs, stdlib only, use fdwait.)"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed


def wait_until(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Poll until condition() is true (True) or timeout seconds have passed (False)."""
    retrying = Retrying(
        retry=retry_if_result(lambda done: not done),
        stop=stop_after_delay(max(0.0, timeout)),
        wait=wait_fixed(period),
        retry_error_callback=lambda _state: False,
    )
    return bool(retrying(condition))
